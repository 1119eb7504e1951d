"""Run by Litestream as its ``exec`` child: exits, and so ends the daemon, once no gateway
holds ``<data_dir>/litestream/owner.lock`` (each holds it shared while it supervises; a
successor takes it before its predecessor lets go, so a restart never frees it; the kernel
frees it when a gateway is killed with -9). No daemon outlives every gateway.

    python -m gateway.backup.watchdog LOCKFILE
"""

from __future__ import annotations

import fcntl
import os
import sys
import time

POLL = 1.0


def main() -> None:
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
    while True:
        time.sleep(POLL)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue
        return  # nobody supervises the daemon any more


if __name__ == "__main__":
    main()
