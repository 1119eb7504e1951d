"""The compiled hot path (gateway/native.py): used when current, never when stale, and the
pure-Python modules it replaces still pass the proxy's own tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway import native
from gateway.cli import cli

ROOT = Path(__file__).resolve().parent.parent


def test_the_suite_runs_on_the_compiled_hot_path():
    # make test builds it first (make native); GATEWAY_NATIVE=0 asks for pure Python on purpose.
    if os.environ.get("GATEWAY_NATIVE") == "0":
        assert native.STATUS.startswith("off")
        return
    required = os.environ.get("GATEWAY_REQUIRE_NATIVE") == "1"
    if shutil.which(native.c_compiler()) is None and not required:
        # No C compiler (the README's commands need only Python and pip): the build could
        # not run, and the gateway must say it runs as pure Python, not claim otherwise.
        assert native.STATUS.startswith("not built"), native.STATUS
        assert not native.in_use()
        return
    assert native.STATUS == "compiled", f"{native.STATUS}: run `make native` (make test does)"
    import gateway.http.protocol
    import gateway.routing.proxy

    for module in (gateway.http.protocol, gateway.routing.proxy):
        assert module.__file__ is not None
        # mypyc names the file after the package layout under the build's directory.
        assert module.__file__.endswith(".so"), module.__file__
        assert Path(module.__file__).is_relative_to(native.NATIVE_DIR), module.__file__
    assert native.in_use()


def fake_build(where: Path, fingerprint: str | None = None) -> Path:
    """A build directory as `gateway native build` leaves it (check() reads no .so file)."""
    where.mkdir(parents=True)
    files = {name: f"{name}.so" for name in native.HOT}
    for file in files.values():
        (where / file).write_bytes(b"")
    manifest = {"fingerprint": fingerprint or native.fingerprint(), "files": files}
    (where / native.MANIFEST).write_text(json.dumps(manifest))
    return where


def test_a_current_build_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("GATEWAY_NATIVE", raising=False)
    files, status = native.check(fake_build(tmp_path / "_native"))
    assert status == "compiled"
    assert files is not None and set(files) == set(native.HOT)


def test_a_build_of_other_sources_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("GATEWAY_NATIVE", raising=False)
    files, status = native.check(fake_build(tmp_path / "_native", "0" * 64))
    assert files is None
    assert status.startswith("stale")


def test_an_edited_hot_source_changes_the_fingerprint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    for module in native.HOT:
        target = tmp_path / native.source_of(module).relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(native.source_of(module), target)
    monkeypatch.setattr(native, "ROOT", tmp_path)
    before = native.fingerprint()
    edited = native.source_of(native.HOT[-1])
    edited.write_text(edited.read_text() + "\n# one more line\n")
    assert native.fingerprint() != before


def test_missing_or_broken_builds_fall_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("GATEWAY_NATIVE", raising=False)
    assert native.check(tmp_path / "nothing-here") == (
        None,
        "not built: pure Python (gateway native build)",
    )
    build = fake_build(tmp_path / "_native")
    (build / "gateway.routing.proxy.so").unlink()
    assert native.check(build) == (None, "incomplete build: pure Python")
    for broken in ("{not json", "[]", '{"files": {}}', '{"fingerprint": "x", "files": 3}'):
        (build / native.MANIFEST).write_text(broken)
        assert native.check(build)[1].startswith("unreadable build"), broken
    monkeypatch.setenv("GATEWAY_NATIVE", "0")
    assert native.check(fake_build(tmp_path / "again"))[1].startswith("off")


def test_native_status_says_which_hot_path_a_gateway_would_run():
    """Checked against what a fresh process really imports, not the function the CLI calls."""

    def fresh(code: str, **env: str) -> str:
        environ = {**os.environ, **env}
        if "GATEWAY_NATIVE" not in env:
            environ.pop("GATEWAY_NATIVE", None)
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=environ, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    status = "from click.testing import CliRunner; from gateway.cli import cli; "
    status += "print(CliRunner().invoke(cli, ['native', 'status']).output)"
    where = "import gateway, gateway.routing.proxy as p; print(p.__file__)"
    said, loaded = fresh(status), fresh(where).strip()
    compiled = not loaded.endswith(".py")
    assert ("hot path: compiled" in said) == compiled, (said, loaded)
    assert "gateway.routing.proxy" in said
    off = fresh(status, GATEWAY_NATIVE="0")
    assert "hot path: off (GATEWAY_NATIVE=0): pure Python" in off
    assert fresh(where, GATEWAY_NATIVE="0").strip().endswith(".py")


def test_a_build_without_a_compiler_names_it_and_leaves_the_build_alone(
    monkeypatch: pytest.MonkeyPatch,
):
    before = sorted(p.name for p in native.NATIVE_DIR.glob("*"))
    monkeypatch.setenv("CC", "no-such-cc")
    monkeypatch.delenv("GATEWAY_REQUIRE_NATIVE", raising=False)
    r = CliRunner().invoke(cli, ["native", "build", "--force"])
    assert r.exit_code == 0, r.output  # pure Python still runs: not an error by default
    assert "no C compiler (no-such-cc)" in r.output
    assert "runs as pure Python" in r.output
    monkeypatch.setenv("GATEWAY_REQUIRE_NATIVE", "1")
    r = CliRunner().invoke(cli, ["native", "build", "--force"])
    assert r.exit_code == 1, r.output
    assert "no C compiler (no-such-cc)" in r.output
    assert sorted(p.name for p in native.NATIVE_DIR.glob("*")) == before


THIS = "tests/test_native.py::test_the_pure_python_hot_path_passes_the_proxy_tests"


# Five test files in a child pytest: the suite's 120 s per-test bound is too tight for all of
# them together on a busy 2-core machine; the child's own run is bounded at 600 s below.
@pytest.mark.timeout(660)
def test_the_pure_python_hot_path_passes_the_proxy_tests():
    # The same sources run uncompiled wherever no build exists (the single-file binary, a
    # machine without a compiler, GATEWAY_NATIVE=0): the protocol's and proxy's own tests
    # must pass that way too.
    files = [
        "tests/test_protocol.py",
        "tests/test_proxy_retries.py",
        "tests/test_proxy_streaming.py",
        "tests/test_proxy_fastpath.py",
        "tests/test_native.py",
    ]
    env = {**os.environ, "GATEWAY_NATIVE": "0"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--deselect",
            THIS,
            *files,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout
