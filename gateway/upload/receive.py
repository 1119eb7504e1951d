"""Stream a multipart upload from raw ASGI ``receive`` into spool files, with hard limits.

Memory stays flat: python-multipart's streaming parser hands over each chunk, which goes
straight to a spool file in the team's ``.spool/`` directory. Bytes are counted as they
arrive; crossing the cap raises ``PayloadTooLarge`` at once and every spool file is removed.
Parts, files and form fields are limited too, so a request cannot make the gateway hold
thousands of small values.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from python_multipart.multipart import MultipartParser, parse_options_header

from gateway.diskspace import no_space, out_of_space
from gateway.errors import BadRequest, ClientClosed, PayloadTooLarge

MAX_PARTS = 32
MAX_FILES = 10
MAX_FIELD_BYTES = 64 * 1024
MAX_FILENAME = 255

Receive = Callable[[], Awaitable[dict[str, Any]]]


@dataclass
class Spooled:
    filename: str  # the client's name, cleaned for display; never used as a path
    path: Path
    size: int = 0


@dataclass
class Upload:
    fields: dict[str, str] = field(default_factory=dict)
    files: list[Spooled] = field(default_factory=list)

    def discard(self) -> None:
        for f in self.files:
            with contextlib.suppress(FileNotFoundError):
                f.path.unlink()


def display_name(raw: str) -> str:
    """Keep only the last path component and printable characters: ``../../x.csv`` -> ``x.csv``."""
    base = raw.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable()).strip().lstrip(".")
    return base[:MAX_FILENAME] or "upload.csv"


class _Collector:
    """Parser callbacks: where each part's bytes go, and the limits on them."""

    def __init__(self, spool_dir: Path, max_bytes: int) -> None:
        self.spool_dir = spool_dir
        self.max_bytes = max_bytes
        self.upload = Upload()
        self.total = 0
        self.parts = 0
        self.complete = False  # the closing boundary arrived: no truncated file is imported
        self._headers: dict[str, bytes] = {}
        self._hname = b""
        self._hvalue = b""
        self._file: BinaryIO | None = None
        self._spooled: Spooled | None = None
        self._name = ""
        self._value = bytearray()

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self.part_begin,
            "on_header_field": lambda d, s, e: self._add_hname(d[s:e]),
            "on_header_value": lambda d, s, e: self._add_hvalue(d[s:e]),
            "on_header_end": self.header_end,
            "on_headers_finished": self.headers_finished,
            "on_part_data": self.part_data,
            "on_part_end": self.part_end,
            "on_end": self.end,
        }

    def end(self) -> None:
        self.complete = True

    def _add_hname(self, data: bytes) -> None:
        self._hname += data

    def _add_hvalue(self, data: bytes) -> None:
        self._hvalue += data

    def part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise BadRequest(f"Too many parts in the form (at most {MAX_PARTS}).")
        self._headers = {}

    def header_end(self) -> None:
        self._headers[self._hname.decode("latin-1").lower()] = self._hvalue
        self._hname, self._hvalue = b"", b""

    def headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get("content-disposition", b""))
        self._name = params.get(b"name", b"").decode("utf-8", "replace")
        filename = params.get(b"filename")
        self._value = bytearray()
        if filename is None:
            return
        if not filename:  # a browser's empty file input: nothing was chosen
            self._name = ""
            return
        if len(self.upload.files) >= MAX_FILES:
            raise BadRequest(f"Too many files in one upload (at most {MAX_FILES}).")
        # ".part" while it streams; the job renames it "<job>.upload" once the body is whole.
        path = self.spool_dir / f"{secrets.token_hex(8)}.part"
        self._spooled = Spooled(display_name(filename.decode("utf-8", "replace")), path)
        self.upload.files.append(self._spooled)
        self._file = open(path, "wb")  # noqa: SIM115 (closed in part_end or close)

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if self._file is not None and self._spooled is not None:
            self._file.write(data[start:end])
            self._spooled.size += end - start
        elif self._name:
            self._value += data[start:end]
            if len(self._value) > MAX_FIELD_BYTES:
                raise BadRequest(f"Form field {self._name!r} is too long.")

    def part_end(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file, self._spooled = None, None
        elif self._name:
            self.upload.fields[self._name] = self._value.decode("utf-8", "replace")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


async def receive_upload(
    scope: dict[str, Any],
    receive: Receive,
    spool_dir: Path,
    max_bytes: int,
    meter: Callable[[int], None] | None = None,
) -> Upload:
    """Read the whole multipart body into spool files; on any error nothing is left behind.

    ``meter`` sees each chunk's size as it arrives and may refuse it (the team's quota)."""
    headers = {k.decode("latin-1"): v for k, v in scope["headers"]}
    ctype, params = parse_options_header(headers.get("content-type", b""))
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise BadRequest("Send the file as multipart/form-data (a form with a file field).")
    length = headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise PayloadTooLarge(_too_large(max_bytes))
    spool_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 (a cached metadata call)
    collector = _Collector(spool_dir, max_bytes)
    parser = MultipartParser(params[b"boundary"], collector.callbacks())  # type: ignore[arg-type]
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientClosed("the client went away during the upload")
            chunk = message.get("body", b"")
            collector.total += len(chunk)
            if collector.total > max_bytes:
                raise PayloadTooLarge(_too_large(max_bytes))
            if meter is not None:
                meter(len(chunk))
            if chunk:
                parser.write(chunk)
            if not message.get("more_body", False):
                break
        parser.finalize()
        if not collector.complete:
            raise BadRequest("The upload is incomplete: the form's closing boundary is missing.")
    except BaseException as exc:
        collector.close()
        collector.upload.discard()
        if out_of_space(exc):
            raise no_space() from exc
        if isinstance(exc, ValueError | OSError) and not isinstance(exc, BadRequest):
            raise BadRequest(f"The upload could not be read: {exc}") from None
        raise
    collector.close()
    if not collector.upload.files:
        raise BadRequest("The form has no file in it.")
    return collector.upload


def _too_large(max_bytes: int) -> str:
    return f"The upload is larger than the {max_bytes / 1024**2:.0f} MiB limit."


def remove_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
