"""Each team's storage quota (``team_quota_bytes``): its volume plus uploads still streaming.

An upload is metered as it streams: every chunk counts at once toward the team's usage,
together with every other upload of that team still in flight (``.part`` files on disk are
counted here, not twice). Crossing the quota answers 413 with the usage, and the receiver
removes what it spooled. An import is checked the same way before it starts: the table it
makes takes about as much room as its file.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gateway.errors import PayloadTooLarge

PART = ".part"  # receive.py's suffix for a file still streaming


class Quota:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._streaming: dict[str, int] = {}  # team -> bytes of its uploads in flight

    def on_disk(self, team_dir: Path) -> int:
        """The team's volume in bytes, without files still streaming (counted in memory)."""
        if not team_dir.exists():
            return 0
        return sum(
            p.lstat().st_size
            for p in team_dir.rglob("*")
            if p.is_file() and not p.is_symlink() and p.suffix != PART
        )

    def check(self, team: str, team_dir: Path, adding: int) -> None:
        """Refuse (413) when ``adding`` bytes would take ``team`` past its quota."""
        used = self.on_disk(team_dir) + self._streaming.get(team, 0)
        if used + adding > self.limit:
            raise self.refuse(used)

    @contextmanager
    def metered(self, team: str, team_dir: Path) -> Iterator[Meter]:
        meter = Meter(self, team, self.on_disk(team_dir))
        try:
            meter.add(0)
            yield meter
        finally:
            if self.count(team, -meter.mine) <= 0:
                del self._streaming[team]

    def count(self, team: str, n: int) -> int:
        """Add ``n`` bytes to the team's uploads in flight; returns their new total."""
        total = self._streaming.get(team, 0) + n
        self._streaming[team] = total
        return total

    def refuse(self, used: int) -> PayloadTooLarge:
        return PayloadTooLarge(self._message(used))

    def _message(self, used: int) -> str:
        return (
            f"This team's storage is full: {_size(used)} of its {_size(self.limit)} quota "
            "would be used (its databases and files, uploads in progress included). "
            "Delete some data, or ask the operator for more room."
        )


class Meter:
    """One upload's running count, shared with the team's other uploads in flight."""

    def __init__(self, quota: Quota, team: str, base: int) -> None:
        self.quota = quota
        self.team = team
        self.base = base
        self.mine = 0

    def add(self, n: int) -> None:
        streaming = self.quota.count(self.team, n)
        self.mine += n
        if self.base + streaming > self.quota.limit:
            raise self.quota.refuse(self.base + streaming)


def _size(n: int) -> str:
    if n >= 1024**3:
        return f"{n / 1024**3:.1f} GiB"
    return f"{n / 1024**2:.1f} MiB"
