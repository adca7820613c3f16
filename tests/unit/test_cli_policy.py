"""`sre-agent check-policy` and `sre-agent run --policy` refuse bad policy files in one line, exit 2.

Each case runs the real command line in a subprocess and checks its whole stderr: exactly one
line, naming the file, no traceback. The operator refuses the same files before it connects to
anything, so `run` needs no cluster here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEADER = b"kind: Policy\nname: x\n"

BAD: list[tuple[str, bytes, str]] = [
    ("nan-threshold", HEADER + b"autoApproveAboveConfidence: .nan\n", "not a finite number"),
    ("inf-threshold", HEADER + b"autoApproveAboveConfidence: .inf\n", "not a finite number"),
    ("minus-inf-threshold", HEADER + b"autoApproveAboveConfidence: -.inf\n", "not a finite number"),
    ("nan-cooldown", HEADER + b"cooldownSeconds: .nan\n", "not a finite number"),
    ("unknown-action", HEADER + b"actions:\n  restart_pods: {}\n", "unknown action 'restart_pods'"),
    ("binary", bytes(range(256)) * 8, "not UTF-8 text"),
    ("bad-utf8", HEADER + b"description: caf\xe9\n", "not UTF-8 text"),
    ("nul-bytes", HEADER + b"\x00\x00\x00", "binary content"),
    ("not-a-mapping", b"- restart_pod\n- none\n", "expected a mapping"),
    ("bad-yaml", HEADER + b"actions: [unclosed\n", "not valid YAML"),
    ("huge-number", HEADER + b"cooldownSeconds: 99999999999999999999999\n", "greater than the maximum"),
]


def sre_agent(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SRE_AGENT_", "KUBECONFIG"))}
    env["KUBECONFIG"] = "/nonexistent/kubeconfig"  # `run` must fail on the policy, not reach a cluster
    return subprocess.run(
        [sys.executable, "-m", "sre_agent.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def check(done: subprocess.CompletedProcess[str], path: Path, fragment: str) -> None:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"sre-agent: {path}: ")
    assert fragment in lines[0]
    assert done.stdout == ""


@pytest.mark.parametrize(("content", "fragment"), [(c, f) for _, c, f in BAD], ids=[i for i, _, _ in BAD])
def test_check_policy_refuses_in_one_line_with_exit_2(tmp_path: Path, content: bytes, fragment: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_bytes(content)
    check(sre_agent("check-policy", str(path)), path, fragment)


@pytest.mark.parametrize("case", ["nan-threshold", "unknown-action", "binary"])
def test_the_operator_refuses_the_same_files(tmp_path: Path, case: str) -> None:
    [(content, fragment)] = [(c, f) for i, c, f in BAD if i == case]
    path = tmp_path / "policy.yaml"
    path.write_bytes(content)
    check(sre_agent("run", "--standalone", "--policy", str(path)), path, fragment)


def test_good_policies_pass_check_policy() -> None:
    files = sorted(str(p) for p in (REPO / "policies").glob("*.yaml"))
    done = sre_agent("check-policy", *files)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert len(done.stdout.splitlines()) == len(files)


def test_every_file_is_checked_one_line_each(tmp_path: Path) -> None:
    nan, unknown = tmp_path / "nan.yaml", tmp_path / "unknown.yaml"
    nan.write_bytes(BAD[0][1])
    unknown.write_bytes(BAD[4][1])
    good = str(REPO / "policies" / "default.yaml")
    done = sre_agent("check-policy", str(nan), good, str(unknown))
    assert done.returncode == 2
    assert [line.split(": ")[1] for line in done.stderr.splitlines()] == [str(nan), str(unknown)]
    assert done.stdout.startswith(f"{good}: ok") and len(done.stdout.splitlines()) == 1
