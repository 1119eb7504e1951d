"""Secrets and data at rest are the gateway user's alone.

The control store holds password hashes, the session-signing secret and every instance's
secret; team volumes hold customers' data. So the gateway runs with umask 077 (directories
0700, files 0600: the data dir, the control store with its WAL/SHM, team volumes, spool
files, logs), and on start it tightens what an older install left readable, saying so in the
log. Only the top of each volume is walked: a 0700 directory already shuts out everyone else.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from gateway.config import Config

log = logging.getLogger("gateway.filemodes")

UMASK = 0o077


def private_umask() -> None:
    """Everything this process (and the instances it starts) creates is private."""
    os.umask(UMASK)


def tighten(config: Config) -> list[Path]:
    """Take group/other bits off the gateway's files and directories; returns what changed."""
    private_umask()
    roots = [config.data_dir, config.teams_dir, config.data_dir / "archive"]
    paths: list[Path] = []
    for root in roots:
        if root.is_dir():
            paths.append(root)
            paths.extend(root.iterdir())
    for team in (config.teams_dir, config.data_dir / "archive"):
        if team.is_dir():
            for volume in team.iterdir():
                if volume.is_dir() and not volume.is_symlink():
                    paths.extend(volume.iterdir())
    if config.access_log not in ("", "-"):
        paths.append(Path(config.access_log))
    changed = [p for p in dict.fromkeys(paths) if _tighten(p)]
    if changed:
        shown = ", ".join(str(p) for p in changed[:5]) + (" ..." if len(changed) > 5 else "")
        log.warning(
            "tightened %d path(s) that others could read or write to 0700/0600: %s",
            len(changed),
            shown,
        )
    return changed


def _tighten(path: Path) -> bool:
    try:
        st = path.lstat()
    except OSError:
        return False
    if stat.S_ISLNK(st.st_mode) or not st.st_mode & 0o077:
        return False
    try:
        path.chmod(stat.S_IMODE(st.st_mode) & 0o700)
    except OSError as exc:
        log.error("cannot make %s private: %s", path, exc)
        return False
    return True
