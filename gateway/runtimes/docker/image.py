"""Build the tenant Datasette image without any registry (``gateway image build``).

The engines here have no images and can pull none, so the image is made from parts the
machine can reach: a Debian root filesystem from debootstrap (the mirror apt already uses)
and wheels downloaded by the host's pip, installed offline inside the chroot, trimmed, then
``docker import``-ed. The tag is derived from the content, so a build whose tag exists is
skipped. Engines that *can* pull may use the ordinary Dockerfile in ``image/`` instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.errors import RuntimeUnavailable

IMAGE_REPO = "gateway-datasette"
ASSETS = Path(__file__).resolve().parent / "image"
PLUGIN = Path(__file__).resolve().parents[2] / "instance" / "gateway_plugin.py"
# Every file of the instance's --plugins-dir (the local runtime loads the same directory).
PLUGINS = (PLUGIN, PLUGIN.with_name("gateway_menu.py"))
PORT = 8001
UID = 10001  # the non-root user Datasette runs as; team volumes are chowned to it
VENV = "/opt/datasette"
PLUGINS_DIR = "/opt/gateway/plugins"
CMD = [
    f"{VENV}/bin/datasette",
    "serve",
    "/data",
    "--host",
    "0.0.0.0",
    "--port",
    str(PORT),
    "--plugins-dir",
    PLUGINS_DIR,
    "--setting",
    "sql_time_limit_ms",
    "10000",
]
# Signed like the gateway's own checks (gateway/routing/signature.py): the instance answers
# nothing else. The container has its secret in DATASETTE_SECRET.
HEALTH_CMD = [
    f"{VENV}/bin/python",
    "-c",
    "import os, urllib.request as u; from itsdangerous import TimestampSigner as S; "
    "s = S(os.environ['DATASETTE_SECRET'], salt='gateway-request').sign(b'health'); "
    f"u.urlopen(u.Request('http://127.0.0.1:{PORT}/-/health', "
    "headers={'x-gateway-signature': s}), timeout=4)",
]
# Everything that shapes the image is data here, so the tag's hash covers it.
RECIPE: dict[str, Any] = {
    "suite": "bookworm",
    "variant": "minbase",
    "include": ["python3", "python3-venv", "ca-certificates"],
    "uid": UID,
    "cmd": CMD,
    "trim": [
        "var/cache/apt",
        "var/lib/apt/lists",
        "usr/share/man",
        "usr/share/info",
        "usr/share/locale",
        "usr/share/doc",
    ],
    "recipe": 1,  # bump when the build steps below change meaningfully
}

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Pins:
    datasette: str
    sqlite_utils: str
    itsdangerous: str

    def requirements(self) -> list[str]:
        return [
            f"datasette=={self.datasette}",
            f"sqlite-utils=={self.sqlite_utils}",
            f"itsdangerous=={self.itsdangerous}",
        ]


def host_pins() -> Pins:
    """The image runs the same versions the gateway was tested with."""
    v = importlib.metadata.version
    return Pins(v("datasette"), v("sqlite-utils"), v("itsdangerous"))


def image_tag(pins: Pins | None = None) -> str:
    """``gateway-datasette:<datasette version>-<hash of every input>``; pure, no Docker."""
    pins = pins or host_pins()
    digest = hashlib.sha256()
    digest.update(json.dumps(RECIPE, sort_keys=True).encode())
    digest.update(json.dumps(pins.requirements()).encode())
    for plugin in PLUGINS:
        digest.update(plugin.read_bytes())
    return f"{IMAGE_REPO}:{pins.datasette}-{digest.hexdigest()[:12]}"


def cache_dir() -> Path:
    base = os.environ.get("GATEWAY_CACHE_DIR") or os.environ.get("XDG_CACHE_HOME")
    root = Path(base) if base else Path.home() / ".cache"
    return root if os.environ.get("GATEWAY_CACHE_DIR") else root / "gateway"


def apt_mirror(suite: str) -> str:
    """The Debian mirror apt is configured with (never hard-coded)."""
    out = _run(
        [
            "apt-get",
            "indextargets",
            "--no-release-info",
            "--format",
            "$(TARGET_OF) $(RELEASE) $(REPO_URI)",
        ],
        what="read apt's mirror",
        capture=True,
    )
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "deb" and parts[1] == suite:
            return parts[2]
    raise RuntimeUnavailable(
        f"apt has no '{suite}' source configured; debootstrap needs a Debian {suite} mirror "
        "(add one to /etc/apt/sources.list, then run apt-get update)"
    )


def check_tools() -> None:
    """Fail early, naming what to install, when a build cannot run on this machine."""
    if shutil.which("debootstrap", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None:
        raise RuntimeUnavailable(
            "debootstrap is not installed: run `apt-get install debootstrap` "
            "(or build from image/Dockerfile on an engine that can pull)"
        )
    if shutil.which("tar") is None:
        raise RuntimeUnavailable("tar is not installed: run `apt-get install tar`")
    if os.geteuid() != 0:
        raise RuntimeUnavailable(
            "building the image needs root (debootstrap and chroot): run it with sudo"
        )


def docker_client() -> Any:
    """A connected Docker client, or a clear error saying what to install or start."""
    try:
        import docker
    except ImportError as exc:  # pragma: no cover - docker is a dependency
        raise RuntimeUnavailable(
            "the docker Python package is missing: pip install docker"
        ) from exc
    client = None
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:
        if client is not None:
            client.close()
        raise RuntimeUnavailable(
            "no Docker engine is reachable: install one (apt-get install docker.io), start it "
            f"(systemctl start docker or dockerd), and check DOCKER_HOST ({exc})"
        ) from exc
    return client


def image_exists(client: Any, tag: str) -> bool:
    import docker.errors

    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def build(*, force: bool = False, progress: Progress = print) -> tuple[str, bool]:
    """Build the image unless its tag exists. Returns (tag, built)."""
    client = docker_client()
    try:
        with readable_files():
            return _build(client, force, progress)
    finally:
        client.close()


@contextlib.contextmanager
def readable_files() -> Iterator[None]:
    """The gateway's umask is 077 (filemodes.py), but the image's files must be readable by
    its non-root user: build with the usual 022, then restore."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _build(client: Any, force: bool, progress: Progress) -> tuple[str, bool]:
    pins = host_pins()
    tag = image_tag(pins)
    if not force and image_exists(client, tag):
        progress(f"Image {tag} already exists; nothing to do.")
        return tag, False
    check_tools()
    steps = 5
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    progress(f"[1/{steps}] Debian {RECIPE['suite']} root filesystem (debootstrap, cached)")
    base = base_rootfs(cache, progress)
    progress(f"[2/{steps}] Downloading wheels with the host's pip: {' '.join(pins.requirements())}")
    wheels = download_wheels(cache, pins)
    with tempfile.TemporaryDirectory(prefix="gateway-image-", dir=cache) as tmp:
        rootfs = Path(tmp) / "rootfs"
        rootfs.mkdir()
        progress(f"[3/{steps}] Installing Datasette offline in the chroot")
        _run(["tar", "--numeric-owner", "-xpf", str(base), "-C", str(rootfs)], what="unpack")
        install_datasette(rootfs, wheels, pins)
        progress(f"[4/{steps}] Adding the non-root user and the gateway plugin; trimming")
        configure(rootfs)
        trim(rootfs)
        progress(f"[5/{steps}] Importing into Docker as {tag}")
        tarball = Path(tmp) / "rootfs.tar"
        _run(
            ["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(tarball), "."],
            what="pack the root filesystem",
        )
        repo, _, version = tag.partition(":")
        client.api.import_image_from_file(
            str(tarball), repository=repo, tag=version, changes=import_changes()
        )
    progress(f"Built {tag}")
    return tag, True


def dockerfile_tag(pins: Pins | None = None) -> str:
    """The tag of the Dockerfile build: the same interface, a different base (``-slim``)."""
    digest = hashlib.sha256((ASSETS / "Dockerfile").read_bytes())
    return f"{image_tag(pins)}-slim{digest.hexdigest()[:6]}"


def build_dockerfile(*, force: bool = False, progress: Progress = print) -> tuple[str, bool]:
    """For engines that can pull: ``FROM python:3.11-slim``, pip inside the build."""
    client = docker_client()
    try:
        with readable_files():
            return _build_dockerfile(client, force, progress)
    finally:
        client.close()


def _build_dockerfile(client: Any, force: bool, progress: Progress) -> tuple[str, bool]:
    pins = host_pins()
    tag = dockerfile_tag(pins)
    if not force and image_exists(client, tag):
        progress(f"Image {tag} already exists; nothing to do.")
        return tag, False
    with tempfile.TemporaryDirectory(prefix="gateway-image-") as tmp:
        context = Path(tmp)
        shutil.copy2(ASSETS / "Dockerfile", context / "Dockerfile")
        for plugin in PLUGINS:
            shutil.copy2(plugin, context / plugin.name)
        (context / "requirements.txt").write_text("\n".join(pins.requirements()) + "\n")
        progress(f"[1/1] docker build {tag} (pulls python:3.11-slim)")
        try:
            for chunk in client.api.build(path=str(context), tag=tag, rm=True, decode=True):
                if "stream" in chunk and chunk["stream"].strip():
                    progress("      " + chunk["stream"].rstrip())
                if "error" in chunk:
                    raise RuntimeUnavailable(f"docker build failed: {chunk['error']}")
        except RuntimeUnavailable:
            raise
        except Exception as exc:
            raise RuntimeUnavailable(f"docker build failed: {exc}") from exc
    progress(f"Built {tag}")
    return tag, True


def resolve_image(client: Any) -> str:
    """The image new containers run: the registry-free build, else the Dockerfile build."""
    for tag in (image_tag(), dockerfile_tag()):
        if image_exists(client, tag):
            return tag
    raise RuntimeUnavailable(
        f"the tenant image {image_tag()} is not built yet: run `gateway image build` "
        "(about two minutes the first time; later builds reuse the cache)"
    )


def import_changes() -> list[str]:
    return [
        "ENV LANG=C.UTF-8",
        "ENV HOME=/tmp",
        f"ENV PATH={VENV}/bin:/usr/bin:/bin",
        f"USER {UID}:{UID}",
        "WORKDIR /data",
        f"EXPOSE {PORT}",
        "CMD " + json.dumps(CMD),
    ]


def base_rootfs(cache: Path, progress: Progress) -> Path:
    """debootstrap once; later builds reuse the cached tarball (slow to make)."""
    key = hashlib.sha256(
        json.dumps([RECIPE["suite"], RECIPE["variant"], RECIPE["include"], _arch()]).encode()
    ).hexdigest()[:12]
    tarball = cache / f"debootstrap-{RECIPE['suite']}-{key}.tar"
    if tarball.exists():
        progress(f"      reusing {tarball}")
        return tarball
    mirror = apt_mirror(RECIPE["suite"])
    with tempfile.TemporaryDirectory(prefix="debootstrap-", dir=cache) as tmp:
        rootfs = Path(tmp) / "rootfs"
        progress(f"      debootstrap from {mirror} (about a minute)")
        _run(
            [
                "debootstrap",
                f"--variant={RECIPE['variant']}",
                "--include=" + ",".join(RECIPE["include"]),
                RECIPE["suite"],
                str(rootfs),
                mirror,
            ],
            what="debootstrap",
        )
        partial = tarball.with_suffix(".partial")
        _run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."], what="tar")
        partial.rename(tarball)  # atomic: an interrupted build never leaves a bad cache
    return tarball


def download_wheels(cache: Path, pins: Pins) -> Path:
    key = hashlib.sha256(json.dumps([pins.requirements(), _arch()]).encode()).hexdigest()[:12]
    wheels = cache / f"wheels-{key}"
    if (wheels / ".complete").exists():
        return wheels
    wheels.mkdir(parents=True, exist_ok=True)
    arch = _arch()
    platforms = [f"manylinux2014_{arch}"] + [f"manylinux_2_{n}_{arch}" for n in range(5, 37)]
    args = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:"]
    args += ["--python-version", "3.11", "--implementation", "cp", "--abi", "cp311"]
    for plat in platforms:
        args += ["--platform", plat]
    args += ["-d", str(wheels), *pins.requirements()]
    _run(args, what="pip download")
    (wheels / ".complete").touch()
    return wheels


def install_datasette(rootfs: Path, wheels: Path, pins: Pins) -> None:
    target = rootfs / "tmp" / "wheels"
    shutil.copytree(wheels, target)
    # env -i: the host's PIP_* variables and proxies must not leak into the chroot.
    chroot = ["chroot", str(rootfs), "env", "-i", "PATH=/usr/bin:/bin", "HOME=/root"]
    _run([*chroot, "python3", "-m", "venv", VENV], what="create the venv")
    _run(
        [
            *chroot,
            f"{VENV}/bin/pip",
            "install",
            "-q",
            "--no-index",
            "--find-links",
            "/tmp/wheels",
            *pins.requirements(),
        ],
        what="pip install (offline, in the chroot)",
    )
    shutil.rmtree(target)


def configure(rootfs: Path) -> None:
    etc = rootfs / "etc"
    with open(etc / "passwd", "a") as f:
        f.write(f"datasette:x:{UID}:{UID}:Datasette:/tmp:/usr/sbin/nologin\n")
    with open(etc / "group", "a") as f:
        f.write(f"datasette:x:{UID}:\n")
    # debootstrap copied the host's; Docker supplies its own at run time.
    for name in ("resolv.conf", "hostname"):
        (etc / name).write_text("")
    plugins = rootfs / PLUGINS_DIR.lstrip("/")
    plugins.mkdir(parents=True)
    for plugin in PLUGINS:
        shutil.copy2(plugin, plugins / plugin.name)
    (rootfs / "data").mkdir(exist_ok=True)
    os.chown(rootfs / "data", UID, UID)


def trim(rootfs: Path) -> None:
    """Roughly halve the image. Keep copyright files and the .pyc files (they speed up every
    start)."""
    for rel in RECIPE["trim"]:
        path = rootfs / rel
        if rel == "usr/share/doc" and path.exists():
            for pkg in path.iterdir():
                for item in pkg.iterdir() if pkg.is_dir() else []:
                    if item.name != "copyright":
                        _remove(item)
            continue
        if path.is_dir():
            for item in path.iterdir():
                _remove(item)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _arch() -> str:
    machine = platform.machine()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def _run(args: list[str], *, what: str, capture: bool = False) -> str:
    try:
        done = subprocess.run(args, check=True, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise RuntimeUnavailable(f"cannot {what}: {args[0]} is not installed") from exc
    except subprocess.CalledProcessError as exc:
        tail = "\n".join((exc.stderr or exc.stdout or "").strip().splitlines()[-15:])
        raise RuntimeUnavailable(f"could not {what} (exit {exc.returncode}):\n{tail}") from exc
    return done.stdout if capture else ""
