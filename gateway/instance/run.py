"""Start Datasette so that it dies with the gateway that started it (local runtime).

Linux's PR_SET_PDEATHSIG delivers SIGTERM to this process when its parent exits, even on
``kill -9`` of the gateway, so no orphaned instance keeps a team's port.
"""

import contextlib
import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


PARENT = "--gateway-parent="  # the gateway's pid, first argument (the local runtime's)


def main() -> None:
    # Not Linux: no prctl, but the gateway still stops its instances on a clean shutdown.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    parent = (
        int(sys.argv.pop(1)[len(PARENT) :])
        if sys.argv[1:2] and sys.argv[1].startswith(PARENT)
        else None
    )
    if parent is not None and os.getppid() != parent:
        sys.exit(1)  # the gateway died before the death signal was armed: nothing would stop us
    from datasette.cli import cli

    sys.argv[0] = "datasette"
    cli()


if __name__ == "__main__":
    main()
