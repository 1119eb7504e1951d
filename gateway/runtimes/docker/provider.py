"""Follow the Docker engine and hand the fleet full snapshots of this gateway's containers.

Traefik's model: list containers, follow the event stream, and on every relevant event (or
every ``relist`` seconds) list again and rebuild the *whole* snapshot; no incremental diffs.
``kill``/``stop`` events arrive before the container dies, so the container is marked
``stopping`` at once: the fleet drains it now instead of learning after the fact from ``die``.
If the engine goes away (restart), the provider reconnects with exponential backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.runtimes.docker.labels import MANAGED_BY, Snapshot, build_snapshot

log = logging.getLogger("gateway.docker.provider")

RELIST = 10.0  # seconds: a full re-list even when no event arrived
BACKOFF_MAX = 30.0
RELEVANT = ("start", "die", "kill", "stop", "destroy", "health_status", "restart", "pause")
Apply = Callable[[Snapshot], Awaitable[None]]


class DockerProvider:
    def __init__(
        self,
        client_factory: Callable[[], Any],
        gateway_id: str,
        domain: str,
        relist: float = RELIST,
    ) -> None:
        self._factory = client_factory
        self.gateway_id = gateway_id
        self.domain = domain
        self.relist = relist
        self.stopping: set[str] = set()  # container ids with a kill/stop since their start
        self.snapshots = 0
        self.reconnects = 0
        self._logged: set[tuple[str, str]] = set()
        self._task: asyncio.Task[None] | None = None
        self._stream: Any = None
        # Why the engine cannot be followed now ("" once a snapshot succeeds): /readyz says it.
        self.error = "docker engine: not connected yet"

    def start(self, apply: Apply) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(apply), name="docker-events")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._close_stream()

    async def _run(self, apply: Apply) -> None:
        backoff = 0.5
        while True:
            before = self.snapshots
            client = None
            try:
                client = await asyncio.to_thread(self._factory)
                await self._follow(client, apply)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.snapshots > before:  # it was connected: start the backoff afresh
                    backoff = 0.5
                self.error = f"docker engine unreachable: {exc}"
                log.warning("docker engine: %s; reconnecting in %.1fs", exc, backoff)
            finally:
                self._close_stream()
                if client is not None:
                    with contextlib.suppress(Exception):
                        client.close()
            self.reconnects += 1
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _follow(self, client: Any, apply: Apply) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        # Subscribe before listing, so nothing that happens in between is missed.
        self._stream = await asyncio.to_thread(self.subscribe, client)
        reader = threading.Thread(
            target=_pump, args=(self._stream, loop, queue), name="docker-events", daemon=True
        )
        reader.start()
        await apply(await self.snapshot(client))
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), self.relist)
            except TimeoutError:
                await apply(await self.snapshot(client))
                continue
            if event is None:
                raise ConnectionError("the event stream ended (engine restarted?)")
            relevant = self.note(event)
            while not queue.empty():  # coalesce a burst into one re-list
                more = queue.get_nowait()
                if more is None:
                    raise ConnectionError("the event stream ended (engine restarted?)")
                relevant = self.note(more) or relevant
            if relevant:
                await apply(await self.snapshot(client))

    def subscribe(self, client: Any) -> Any:
        """The engine's event stream, filtered to what can change a snapshot."""
        return client.events(decode=True, filters={"type": "container", "label": [MANAGED_BY]})

    def list_routes(self, client: Any) -> Snapshot:
        """One full snapshot, straight from the engine (blocking: runs in a thread)."""
        infos = client.api.containers(all=True, filters={"label": MANAGED_BY})
        return build_snapshot(infos, self.gateway_id, self.domain)

    def subject(self, event: dict[str, Any]) -> str:
        """The id of the route an event is about (a route's ``container``)."""
        return str(event.get("id") or event.get("Actor", {}).get("ID", ""))

    def note(self, event: dict[str, Any]) -> bool:
        action = str(event.get("Action") or event.get("status") or "")
        cid = self.subject(event)
        if action in ("kill", "stop"):
            self.stopping.add(cid)
        elif action in ("start", "destroy"):
            self.stopping.discard(cid)
        return action.split(":")[0] in RELEVANT

    async def snapshot(self, client: Any) -> Snapshot:
        snap = await asyncio.to_thread(self.list_routes, client)
        snap.routes = [
            dataclasses.replace(r, state="stopping") if r.container in self.stopping else r
            for r in snap.routes
        ]
        for rejected in snap.rejected:
            key = (rejected.container, rejected.reason)
            if key not in self._logged:  # once per container and reason, not every re-list
                self._logged.add(key)
                if rejected.other_gateway:
                    log.debug(
                        "container %s is another gateway's: %s", rejected.name, rejected.reason
                    )
                    continue
                kind = "forged labels" if rejected.forged else "bad labels"
                log.warning("ignoring container %s (%s): %s", rejected.name, kind, rejected.reason)
        self.snapshots += 1
        self.error = ""
        return snap

    def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()


def _pump(stream: Any, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Any]) -> None:
    """Blocking reader thread: forward each event to the loop; None when the stream ends."""
    try:
        for event in stream:
            loop.call_soon_threadsafe(queue.put_nowait, event)
    except Exception as exc:
        log.debug("event stream closed: %s", exc)
    finally:
        with contextlib.suppress(RuntimeError):  # the loop may already be closed
            loop.call_soon_threadsafe(queue.put_nowait, None)
