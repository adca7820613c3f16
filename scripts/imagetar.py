"""Write a `docker save`-format image tarball from a directory (used by scripts/images).

    python3 scripts/imagetar.py ROOTFS NAME:TAG OUT.tar [--entrypoint JSON|PATH] [--cmd JSON|ARG]
                                [--env K=V ...] [--user UID[:GID]] [--workdir DIR]

One layer holding ROOTFS, a config whose rootfs.diff_ids is that layer's sha256, and a
manifest.json naming NAME:TAG, the format `ctr images import` and `docker load` read.
Entries are sorted, owned by root, with one fixed mtime, so the same directory gives the
same bytes. Standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import stat
import sys
import tarfile
import tempfile
from pathlib import Path

MTIME = 946684800  # 2000-01-01T00:00:00Z: files carry no build time
CREATED = "2000-01-01T00:00:00Z"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ARCH = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def _die(msg: str) -> None:
    print(f"imagetar: {msg}", file=sys.stderr)
    raise SystemExit(2)


def _argv(value: str | None) -> list[str] | None:
    """`--entrypoint '["a","b"]'` or `--entrypoint /a` (one argument)."""
    if value is None:
        return None
    if value.startswith("["):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as e:
            _die(f"not a JSON list: {value!r} ({e.msg})")
        if not isinstance(parsed, list) or not all(isinstance(x, str) for x in parsed):
            _die(f"not a JSON list of strings: {value!r}")
        return parsed
    return [value]


def _entries(root: Path) -> list[Path]:
    """Every path under root, parents before children, sorted byte-wise at each level."""
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        here = Path(dirpath)
        # os.walk lists symlinks to directories among dirnames but does not descend into them
        names = sorted(filenames + [d for d in dirnames if (here / d).is_symlink()])
        subdirs = [d for d in dirnames if not (here / d).is_symlink()]
        dirnames[:] = subdirs
        out.extend(here / d for d in subdirs)
        out.extend(here / n for n in names)
    return sorted(out, key=lambda p: p.relative_to(root).as_posix().encode())


def write_layer(root: Path, out: io.BufferedWriter) -> None:
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in _entries(root):
            arcname = path.relative_to(root).as_posix()
            st = path.lstat()
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                print(f"imagetar: skipping special file {arcname}", file=sys.stderr)
                continue
            info = tar.gettarinfo(str(path), arcname)  # notices hard links to earlier entries
            info.mtime = MTIME
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if info.isreg():
                with path.open("rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = MTIME
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def build(root: Path, ref: str, out: Path, image_config: dict[str, object]) -> None:
    if not root.is_dir():
        _die(f"{root}: not a directory")
    name, sep, tag = ref.rpartition(":")
    if not sep or not name or not tag or "/" in tag:
        _die(f"image name must be NAME:TAG, got {ref!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".imagetar-") as tmp:
        layer = Path(tmp) / "layer.tar"
        with layer.open("wb") as f:
            write_layer(root, f)
        diff_id = _sha256(layer)
        config = {
            "architecture": ARCH.get(platform.machine(), platform.machine()),
            "os": "linux",
            "created": CREATED,
            "config": image_config,
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
            "history": [{"created": CREATED, "created_by": "scripts/images"}],
        }
        config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
        config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
        manifest = [{"Config": config_name, "RepoTags": [ref], "Layers": [f"{diff_id}/layer.tar"]}]
        partial = Path(tmp) / "image.tar"
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            _add_bytes(tar, config_name, config_bytes)
            info = tarfile.TarInfo(f"{diff_id}/layer.tar")
            info.size = layer.stat().st_size
            info.mtime = MTIME
            info.mode = 0o644
            with layer.open("rb") as f:
                tar.addfile(info, f)
            _add_bytes(tar, "manifest.json", json.dumps(manifest, separators=(",", ":")).encode())
            _add_bytes(tar, "repositories", json.dumps({name: {tag: diff_id}}).encode())
        partial.replace(out)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("rootfs", type=Path)
    p.add_argument("ref", metavar="NAME:TAG")
    p.add_argument("out", type=Path)
    p.add_argument("--entrypoint")
    p.add_argument("--cmd")
    p.add_argument("--env", action="append", default=[], metavar="K=V")
    p.add_argument("--user")
    p.add_argument("--workdir")
    a = p.parse_args(argv)
    env = [DEFAULT_PATH]
    for kv in a.env:
        key, sep, _ = kv.partition("=")
        if not sep or not key:
            _die(f"--env wants K=V, got {kv!r}")
        env = [e for e in env if e.partition("=")[0] != key] + [kv]
    cfg: dict[str, object] = {"Env": env}
    if (entrypoint := _argv(a.entrypoint)) is not None:
        cfg["Entrypoint"] = entrypoint
    if (cmd := _argv(a.cmd)) is not None:
        cfg["Cmd"] = cmd
    if a.user:
        cfg["User"] = a.user
    if a.workdir:
        cfg["WorkingDir"] = a.workdir
    build(a.rootfs, a.ref, a.out, cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
