"""scripts/cluster itself: `up` answers with the pinned release, `down` leaves nothing behind."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.cluster.conftest import CLUSTER_SCRIPT


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=600, check=False)


def _state(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def test_up_serves_the_pinned_release_and_down_stops_every_process(tmp_path: Path) -> None:
    env = {**os.environ, "SRE_AGENT_CLUSTER_DIR": str(tmp_path), "SRE_AGENT_NODE": "0"}
    up = _run("bash", str(CLUSTER_SCRIPT), "up", env=env)
    assert up.returncode == 0, up.stderr
    assert f"export KUBECONFIG={tmp_path / 'kubeconfig'}" in up.stdout
    try:
        state = _state(tmp_path / "state")
        version = _run(
            str(tmp_path / "kubectl"),
            f"--kubeconfig={tmp_path / 'kubeconfig'}",
            "get",
            "--raw",
            "/version",
            env=env,
        )
        assert version.returncode == 0, version.stderr
        assert '"gitVersion": "v1.36.3"' in version.stdout
        pids = [int(state[k]) for k in ("ETCD_PID", "APISERVER_PID", "KCM_PID")]
        assert all(Path(f"/proc/{pid}").exists() for pid in pids)
        # A second `up` reuses the running cluster instead of starting another.
        again = _run("bash", str(CLUSTER_SCRIPT), "up", env=env)
        assert again.returncode == 0 and _state(tmp_path / "state") == state
    finally:
        down = _run("bash", str(CLUSTER_SCRIPT), "down", env=env)
    assert down.returncode == 0, down.stderr
    for pid in pids:
        cmdline = Path(f"/proc/{pid}/cmdline")
        assert not cmdline.exists() or (
            b"kube" not in cmdline.read_bytes() and b"etcd" not in cmdline.read_bytes()
        )
    assert not Path(state["WORK"]).exists()
    assert _run("bash", str(CLUSTER_SCRIPT), "status", env=env).returncode != 0
