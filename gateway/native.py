"""The proxy's hot path compiled with mypyc, used only while it matches its source exactly.

    gateway native build     compile (about 30 s; a no-op when up to date)
    gateway native status    say whether the compiled modules would be used, and why

The modules in ``HOT`` (the server protocol, the proxy and its upstream client, routing, auth's
per-request check, the access log) are ordinary, type-checked Python. mypyc turns them into C
extensions, which run a proxied request in far fewer instructions (the figures are in
benchmarks/README.md). ``make run`` and ``make test`` build them.

Safety first, because a stale build would silently run old code:

* The build goes to ``gateway/_native/`` (never next to the sources, where it would shadow
  them), with a manifest holding a fingerprint of the Python version and every hot source.
* ``activate()`` (run when the ``gateway`` package is imported) loads the compiled modules only
  when that fingerprint matches the sources as they are now. Edit one file and the whole set
  falls back to pure Python (mypyc's modules call each other directly, so a mix is unsafe)
  until the next build; ``status`` says so.
* ``GATEWAY_NATIVE=0`` turns them off; no compiler or no mypy means pure Python, which is the
  same code, only slower. ``GATEWAY_REQUIRE_NATIVE=1`` (set by ``.ci/run``) makes a failed
  build an error and a test fail, so CI always runs the suite on what production runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

PACKAGE = Path(__file__).resolve().parent
ROOT = PACKAGE.parent
NATIVE_DIR = PACKAGE / "_native"
MANIFEST = "manifest.json"
FORMAT = 1  # bump when the manifest or the build's layout changes

# Every module a proxied request runs through, in one mypyc group. (gateway.errors and
# gateway.responses stay Python: mypyc rejects their class bodies, and they serve errors.)
HOT: tuple[str, ...] = (
    "gateway.context",
    "gateway.http.protocol",
    "gateway.app",
    "gateway.http.deadlines",
    "gateway.http.upstream",
    "gateway.routing.headers",
    "gateway.routing.retry",
    "gateway.routing.exchange",
    "gateway.routing.proxy",
    "gateway.routing.table",
    "gateway.routing.service",
    "gateway.routing.target",
    "gateway.routing.balancer",
    "gateway.auth.authorize",
    "gateway.auth.gatekeeper",
    "gateway.observability.observe",
    "gateway.observability.accesslog",
    "gateway.observability.stats",
)

# What activate() found: "compiled", or why the pure-Python modules run instead.
STATUS = "not checked"


def source_of(module: str) -> Path:
    return ROOT / (module.replace(".", "/") + ".py")


def fingerprint() -> str:
    digest = hashlib.sha256()
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    digest.update(f"{FORMAT}|{sys.version}|{suffix}".encode())
    for module in HOT:
        digest.update(module.encode() + b"\0")
        digest.update(source_of(module).read_bytes())
    return digest.hexdigest()


class _NativeFinder(importlib.abc.MetaPathFinder):
    """Finds exactly the compiled hot modules (and mypyc's shared library for them)."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        file = self.files.get(fullname)
        if file is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(file))
        return importlib.util.spec_from_file_location(fullname, file, loader=loader)


def check(native_dir: Path = NATIVE_DIR) -> tuple[dict[str, Path] | None, str]:
    """(the compiled files to load, or None; the status that explains it)."""
    if os.environ.get("GATEWAY_NATIVE", "1") == "0":
        return None, "off (GATEWAY_NATIVE=0): pure Python"
    try:
        manifest = json.loads((native_dir / MANIFEST).read_text())
    except FileNotFoundError:
        return None, "not built: pure Python (gateway native build)"
    except (OSError, ValueError) as exc:
        return None, f"unreadable build ({exc}): pure Python"
    try:
        built, listed = manifest["fingerprint"], dict(manifest["files"])
    except (KeyError, TypeError, ValueError) as exc:
        return None, f"unreadable build (no {exc} in its manifest): pure Python"
    if built != fingerprint():
        return None, "stale (a hot source or Python changed since the build): pure Python"
    files = {str(name): native_dir / str(file) for name, file in listed.items()}
    missing = [str(f) for f in files.values() if not f.exists()]
    if missing or set(HOT) - set(files):
        return None, "incomplete build: pure Python"
    return files, "compiled"


def activate() -> str:
    """Load the compiled hot modules from now on, if they are current. Safe to call twice."""
    global STATUS
    if any(isinstance(f, _NativeFinder) for f in sys.meta_path):
        return STATUS
    loaded = [name for name in HOT if name in sys.modules]
    try:
        files, STATUS = check()
    except OSError as exc:  # a hot source unreadable: nothing to compare with
        files, STATUS = None, f"cannot check the build ({exc}): pure Python"
    if files is not None and loaded:
        files, STATUS = None, f"{loaded[0]} was imported before activate(): pure Python"
    if files is not None:
        sys.meta_path.insert(0, _NativeFinder(files))
    return STATUS


def in_use() -> bool:
    """True when the hot modules imported so far are the compiled ones."""
    return all(
        not getattr(sys.modules.get(name), "__file__", "").endswith(".py")
        for name in HOT
        if name in sys.modules
    ) and any(name in sys.modules for name in HOT)


# -- the build -------------------------------------------------------------------------------
_SETUP = """
import sys
from setuptools import Distribution
from mypyc.build import mypycify

paths, build_lib, build_temp, c_dir = sys.argv[1].split(","), sys.argv[2], sys.argv[3], sys.argv[4]
extensions = mypycify(paths, opt_level="3", target_dir=c_dir)
print("STEP compiling", len(extensions), "C extensions", flush=True)
dist = Distribution({"name": "gateway-native", "ext_modules": extensions})
command = dist.get_command_obj("build_ext")
command.build_lib, command.build_temp, command.inplace = build_lib, build_temp, False
dist.run_command("build_ext")
"""


class BuildFailed(Exception):
    pass


def c_compiler() -> str:
    """The compiler setuptools will run: $CC, else the one Python was built with."""
    return (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]


def build(
    native_dir: Path = NATIVE_DIR, *, force: bool = False, echo: Callable[[str], None] = print
) -> bool:
    """Compile HOT into native_dir. False when it was already current (and not forced)."""
    if not force and check(native_dir)[1] == "compiled":
        echo(f"gateway.native: up to date ({len(HOT)} modules in {native_dir})")
        return False
    if importlib.util.find_spec("mypyc") is None:
        raise BuildFailed("mypyc is not installed (it comes with mypy: pip install mypy)")
    compiler = c_compiler()
    if shutil.which(compiler) is None:
        raise BuildFailed(f"no C compiler ({compiler}): install one, e.g. apt-get install -y gcc")
    started = time.monotonic()
    stamp = fingerprint()  # of the sources as they are when the build starts
    with tempfile.TemporaryDirectory(prefix="gateway-native-") as tmp:
        work = Path(tmp)
        paths = ",".join(str(source_of(m).relative_to(ROOT)) for m in HOT)
        log_path = work / "build.log"
        echo(f"gateway.native: [1/3] type-checking {len(HOT)} modules and writing C (mypyc)")
        with log_path.open("w") as log:
            args = [paths, str(work / "lib"), str(work / "tmp"), str(work / "c")]
            proc = subprocess.Popen(
                [sys.executable, "-c", _SETUP, *args],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                if line.startswith("STEP "):
                    echo(f"gateway.native: [2/3] {line[5:].strip()} (gcc -O3)")
            code = proc.wait()
        if code != 0:
            tail = "".join(log_path.read_text().splitlines(keepends=True)[-25:])
            raise BuildFailed(f"the mypyc build failed (exit {code}):\n{tail}")
        echo("gateway.native: [3/3] installing")
        files = _collect(work / "lib")
        staged = Path(tempfile.mkdtemp(prefix="_native.", dir=native_dir.parent))
        for name, file in files.items():
            shutil.copy2(file, staged / _flat_name(name))
        manifest = {
            "format": FORMAT,
            "fingerprint": stamp,
            "python": sys.version,
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": {name: _flat_name(name) for name, file in files.items()},
        }
        (staged / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        # Swap directories: a gateway starting meanwhile sees the old build or the new one.
        old = native_dir.with_name(native_dir.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            native_dir.rename(old)
        staged.rename(native_dir)
        shutil.rmtree(old, ignore_errors=True)
    if fingerprint() != stamp:
        echo("gateway.native: a hot source changed during the build; run it again")
    echo(f"gateway.native: built {len(files)} files in {time.monotonic() - started:.0f} s")
    return True


def _collect(lib: Path) -> dict[str, Path]:
    """Module name -> built extension, from setuptools' build_lib tree."""
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    found: dict[str, Path] = {}
    for file in lib.rglob(f"*{suffix}"):
        parts = file.relative_to(lib).parts
        found[".".join([*parts[:-1], parts[-1][: -len(suffix)]])] = file
    missing = set(HOT) - set(found)
    if missing:
        raise BuildFailed(f"the build made no extension for {', '.join(sorted(missing))}")
    return found


def _flat_name(name: str) -> str:
    return name + importlib.machinery.EXTENSION_SUFFIXES[0]
