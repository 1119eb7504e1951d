"""A load balancer over a set of targets: the healthy one with the fewest requests in flight."""

from __future__ import annotations

from gateway.routing.target import State, Target


class LoadBalancer:
    def __init__(self, targets: list[Target] | None = None) -> None:
        self.targets: list[Target] = list(targets or [])

    def add(self, target: Target) -> None:
        self.targets.append(target)

    def remove(self, target: Target) -> None:
        if target in self.targets:
            self.targets.remove(target)

    def pick(self, exclude: Target | None = None) -> Target | None:
        best: Target | None = None
        for t in self.targets:
            if (
                t.state is State.HEALTHY
                and t is not exclude
                and (best is None or t.inflight < best.inflight)
            ):
                best = t
        return best
