"""Start Datasette so that it dies with the gateway that started it (local runtime).

Linux's PR_SET_PDEATHSIG delivers SIGTERM to this process when its parent exits, even on
``kill -9`` of the gateway, so no orphaned instance keeps a team's port.
"""

import contextlib
import ctypes
import signal
import sys

PR_SET_PDEATHSIG = 1


def main() -> None:
    # Not Linux: no prctl, but the gateway still stops its instances on a clean shutdown.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    from datasette.cli import cli

    sys.argv[0] = "datasette"
    cli()


if __name__ == "__main__":
    main()
