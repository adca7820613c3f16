"""scripts/images: image tarballs that `ctr images import` reads, built without a registry.

File-level checks only (no containerd): the docker-save layout is self-consistent (config named
by its digest, diff_ids equal to the layers' sha256, RepoTags), the bytes are reproducible, and
the Python images run their interpreter (chroot into the unpacked layers, as root).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.node

CHROOT = shutil.which("chroot") or "/usr/sbin/chroot"
IMAGES = Path(__file__).resolve().parents[2] / "scripts" / "images"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="scripts/images builds root filesystems as root")


def _images(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(IMAGES), *args], capture_output=True, text=True, timeout=1800, check=False
    )


def _build(kind: str) -> Path:
    done = _images(kind)
    assert done.returncode == 0, done.stderr[-3000:]
    path = Path(done.stdout.strip().splitlines()[-1])
    assert path.is_file()
    return path


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read(image: Path) -> tuple[dict[str, Any], dict[str, Any], list[bytes]]:
    """manifest entry, config, layer tars; asserting the docker-save invariants on the way."""
    with tarfile.open(image) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        assert len(manifest) == 1
        entry = manifest[0]
        config_bytes = tar.extractfile(entry["Config"]).read()  # type: ignore[union-attr]
        layers = [tar.extractfile(name).read() for name in entry["Layers"]]  # type: ignore[union-attr]
    config = json.loads(config_bytes)
    assert entry["Config"].removeprefix("blobs/sha256/").removesuffix(".json") == _sha256(config_bytes)
    assert config["rootfs"]["type"] == "layers"
    assert config["rootfs"]["diff_ids"] == [f"sha256:{_sha256(layer)}" for layer in layers]
    assert config["os"] == "linux"
    return entry, config, layers


def _members(layer: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        return {m.name: m for m in tar.getmembers()}


def _unpack(image: Path, dest: Path) -> None:
    """The image's layers in order, the way a snapshotter stacks them (no whiteouts expected)."""
    _, _, layers = _read(image)
    dest.mkdir()
    for layer in layers:
        assert not [n for n in _members(layer) if os.path.basename(n).startswith(".wh.")]
        subprocess.run(["tar", "-x", "-C", str(dest)], input=layer, check=True)


def test_tarball_writes_a_reproducible_image_with_the_given_config(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "app").mkdir(parents=True)
    (root / "app" / "run").write_text("#!/bin/sh\necho hi\n")
    (root / "app" / "run").chmod(0o755)
    os.link(root / "app" / "run", root / "app" / "run2")
    (root / "app" / "current").symlink_to("run")
    args = [
        "--entrypoint",
        '["/app/run", "-v"]',
        "--env",
        "A=1",
        "--env",
        "PATH=/app",
        "--user",
        "1000:1000",
        "--workdir",
        "/app",
    ]
    first = _images("tarball", str(root), "example.test/app:2", str(tmp_path / "a.tar"), *args)
    assert first.returncode == 0, first.stderr
    os.utime(root / "app" / "run", (1, 1))  # mtimes of the sources do not reach the image
    second = _images("tarball", str(root), "example.test/app:2", str(tmp_path / "b.tar"), *args)
    assert second.returncode == 0, second.stderr
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()

    entry, config, layers = _read(tmp_path / "a.tar")
    assert entry["RepoTags"] == ["example.test/app:2"]
    assert config["config"] == {
        "Entrypoint": ["/app/run", "-v"],
        "Env": ["A=1", "PATH=/app"],
        "User": "1000:1000",
        "WorkingDir": "/app",
    }
    members = _members(layers[0])
    assert list(members) == ["app", "app/current", "app/run", "app/run2"]
    assert members["app/run"].mode == 0o755 and members["app/run"].uid == 0
    assert members["app/current"].issym() and members["app/current"].linkname == "run"
    assert members["app/run2"].islnk() and members["app/run2"].linkname == "app/run"
    assert {m.mtime for m in members.values()} == {946684800}


def test_tarball_rejects_a_name_without_a_tag_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "rootfs").mkdir()
    done = _images("tarball", str(tmp_path / "rootfs"), "no-tag", str(tmp_path / "x.tar"))
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == ["imagetar: image name must be NAME:TAG, got 'no-tag'"]
    assert not (tmp_path / "x.tar").exists()


@needs_root
def test_busybox_image_has_a_shell_tmp_and_nobody() -> None:
    entry, config, layers = _read(_build("busybox"))
    assert entry["RepoTags"] == ["sre-agent-test/busybox:1"]
    assert config["config"]["Cmd"] == ["sh"]
    members = _members(layers[0])
    assert members["usr/bin/busybox"].isreg() and members["usr/bin/busybox"].mode == 0o755
    for applet in (
        "bin/sh",
        "bin/echo",
        "bin/sleep",
        "bin/cat",
        "bin/head",
        "bin/dd",
        "bin/nc",
        "sbin/httpd",
    ):
        assert members[f"usr/{applet}"].linkname == "/usr/bin/busybox", applet
    assert members["bin"].linkname == "usr/bin"
    assert members["tmp"].mode == 0o1777
    with tarfile.open(fileobj=io.BytesIO(layers[0])) as tar:
        passwd = tar.extractfile("etc/passwd").read().decode()  # type: ignore[union-attr]
    assert "nobody:x:65534:65534:" in passwd


@needs_root
def test_pause_image_is_one_static_binary_run_as_65535() -> None:
    entry, config, layers = _read(_build("pause"))
    assert entry["RepoTags"] == ["sre-agent-test/pause:1"]
    assert config["config"]["Entrypoint"] == ["/pause"]
    assert config["config"]["User"] == "65535:65535"
    members = _members(layers[0])
    assert list(members) == ["pause"]
    assert members["pause"].mode == 0o755


@needs_root
def test_python_base_runs_python_with_tls_and_sqlite(tmp_path: Path) -> None:
    image = _build("python-base")
    entry, _, _ = _read(image)
    assert entry["RepoTags"] == ["sre-agent-test/python-base:3.11"]
    root = tmp_path / "root"
    _unpack(image, root)
    code = (
        "import asyncio, json, sqlite3, ssl, sys, venv\n"
        "assert ssl.create_default_context().cert_store_stats()['x509_ca'] > 0\n"
        "print(sys.version_info[:2], sqlite3.sqlite_version)\n"
    )
    done = subprocess.run(
        [CHROOT, str(root), "/usr/local/bin/python3", "-c", code], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("(3, 11) ")


@needs_root
def test_operator_image_runs_the_cli_as_uid_10001_without_pip(tmp_path: Path) -> None:
    image = _build("operator")
    entry, config, _ = _read(image)
    assert entry["RepoTags"] in (["sre-agent:dev"], ["docker.io/library/sre-agent:dev"])
    assert config["config"]["User"] == "10001:10001"
    assert config["config"]["Entrypoint"] == ["sre-agent", "run"]
    assert set(config["config"]["ExposedPorts"]) == {"8080/tcp", "9090/tcp"}
    root = tmp_path / "root"
    _unpack(image, root)
    assert (root / "opt/sre-agent/bin/sre-agent").is_file()
    assert not (root / "opt/sre-agent/bin/pip").exists()
    assert not (root / "src").exists()
    done = subprocess.run(
        [CHROOT, "--userspec=10001:10001", str(root), "sre-agent", "run", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/opt/sre-agent/bin:/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: sre-agent run")
