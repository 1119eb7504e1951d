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

from gateway import native

ROOT = Path(__file__).resolve().parent.parent


def test_the_suite_runs_on_the_compiled_hot_path():
    # make test builds it first (make native); GATEWAY_NATIVE=0 asks for pure Python on purpose.
    if os.environ.get("GATEWAY_NATIVE") == "0":
        assert native.STATUS.startswith("off")
        return
    assert native.STATUS == "compiled", f"{native.STATUS}: run `make native` (make test does)"
    import gateway.protocol
    import gateway.routing.proxy

    for module in (gateway.protocol, gateway.routing.proxy):
        assert module.__file__ is not None
        # mypyc names the file after the package layout under the build's directory.
        assert module.__file__.endswith(".so"), module.__file__
        assert Path(module.__file__).is_relative_to(native.NATIVE_DIR), module.__file__
    assert native.in_use()


def copy_build(tmp_path: Path) -> Path:
    if not (native.NATIVE_DIR / native.MANIFEST).exists():
        pytest.fail("no build to copy: run `make native` (make test does)")
    copy = tmp_path / "_native"
    shutil.copytree(native.NATIVE_DIR, copy)
    return copy


def test_a_current_build_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("GATEWAY_NATIVE", raising=False)
    files, status = native.check(copy_build(tmp_path))
    assert status == "compiled"
    assert files is not None and set(native.HOT) <= set(files)


def test_a_build_of_other_sources_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("GATEWAY_NATIVE", raising=False)
    build = copy_build(tmp_path)
    manifest = json.loads((build / native.MANIFEST).read_text())
    manifest["fingerprint"] = "0" * 64
    (build / native.MANIFEST).write_text(json.dumps(manifest))
    files, status = native.check(build)
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
    build = copy_build(tmp_path)
    next(build.glob("gateway.routing.proxy.*")).unlink()
    assert native.check(build) == (None, "incomplete build: pure Python")
    (build / native.MANIFEST).write_text("{not json")
    assert native.check(build)[1].startswith("unreadable build")
    monkeypatch.setenv("GATEWAY_NATIVE", "0")
    assert native.check(copy_build(tmp_path / "again"))[1].startswith("off")


THIS = "tests/test_native.py::test_the_pure_python_hot_path_passes_the_proxy_tests"


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
