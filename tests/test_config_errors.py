"""Each configuration mistake is one line that names the flag and the fix: never a traceback,
never silently ignored. Real ``gateway serve`` processes."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

GATEWAY = str(Path(sys.executable).with_name("gateway"))


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return subprocess.run(
        [GATEWAY, "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def one_line_error(out: subprocess.CompletedProcess[str], *words: str) -> None:
    assert out.returncode in (1, 2), out
    assert "Traceback" not in out.stderr, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and not out.stderr.startswith("Usage"), out.stderr
    for word in words:
        assert word in errors[0], (word, errors[0])


@contextlib.contextmanager
def listening() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@contextlib.contextmanager
def read_only_dir(path: Path) -> Iterator[Path]:
    """A directory this process cannot write: a read-only tmpfs as root, else mode 0555."""
    path.mkdir()
    if os.geteuid() == 0:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)], check=True)
        try:
            yield path
        finally:
            subprocess.run(["umount", str(path)], check=True)
    else:
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)


def test_bad_log_level(tmp_path: Path) -> None:
    out = serve("--data-dir", str(tmp_path / "d"), "--log-level", "verbose")
    one_line_error(out, "--log-level", "verbose", "debug, info, warning, error")


def test_redirect_port_without_tls_is_refused_not_ignored(tmp_path: Path) -> None:
    out = serve("--data-dir", str(tmp_path / "d"), "--redirect-port", "8080")
    one_line_error(out, "--redirect-port", "--tls-cert")


def test_a_data_dir_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    out = serve("--data-dir", str(tmp_path / "file" / "data"), "--port", "0")
    one_line_error(out, "--data-dir", "is a file")


def test_a_read_only_data_dir(tmp_path: Path) -> None:
    with read_only_dir(tmp_path / "ro") as ro:
        out = serve("--data-dir", str(ro / "data"), "--port", "0", "--admin-port", "0")
        one_line_error(out, "--data-dir", str(ro / "data"))
        out = serve("--data-dir", str(ro), "--port", "0", "--admin-port", "0")
        one_line_error(out, "--data-dir", "not writable")


@pytest.mark.parametrize("flag", ["--port", "--admin-port"])
def test_an_address_in_use_names_the_listener_and_flag(tmp_path: Path, flag: str) -> None:
    with listening() as port:
        other = "--admin-port" if flag == "--port" else "--port"
        out = serve("--data-dir", str(tmp_path / "d"), flag, str(port), other, "0")
    one_line_error(out, f"{flag} {port}", "in use", f"choose another {flag}")
