"""Start-up in one line: busy ports, misspelt variables, scheme-less LLM URLs, unreadable kubeconfigs.

Plus the operator's logging (kopf's per-handler success lines at debug, JSON lines naming their
logger) and the CLI's --version and help texts. The CLI tests run `sre-agent` as a subprocess
and assert the exact stderr line and the exit code.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sre_agent.cli import build_parser
from sre_agent.operator.app import configure_logging
from sre_agent.settings import KNOWN_VARIABLES, Settings, SettingsError, unknown_variables

REPO = Path(__file__).resolve().parents[2]


def run_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sre_agent.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **env},
        timeout=60,
        check=False,
    )


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something else is listening on (9090 is Prometheus's own default)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("variable", ["SRE_AGENT_METRICS_PORT", "SRE_AGENT_HEALTH_PORT"])
def test_a_busy_port_is_one_line_naming_the_variable(tmp_path: Path, busy_port: int, variable: str) -> None:
    other = "SRE_AGENT_HEALTH_PORT" if variable == "SRE_AGENT_METRICS_PORT" else "SRE_AGENT_METRICS_PORT"
    proc = run_cli(tmp_path, "run", "--standalone", **{variable: str(busy_port), other: "0"})
    assert proc.returncode == 2
    assert proc.stderr == (
        f"sre-agent: port {busy_port} is already in use: set {variable} to a free port (0 turns it off)\n"
    )


def test_an_llm_url_without_a_scheme_is_refused_at_start(tmp_path: Path) -> None:
    proc = run_cli(tmp_path, "run", "--standalone", SRE_AGENT_LLM_BASE_URL="vllm:8000/v1")
    assert proc.returncode == 2
    assert proc.stderr == (
        "sre-agent: SRE_AGENT_LLM_BASE_URL='vllm:8000/v1': must be an http:// or https:// URL, "
        "e.g. http://vllm:8000/v1\n"
    )
    replay = run_cli(tmp_path, "replay", "--reasoner", "llm", "--base-url", "localhost:11434")
    assert replay.returncode == 2 and replay.stderr.count("\n") == 1
    assert "'localhost:11434': must be an http:// or https:// URL" in replay.stderr


def test_an_unreadable_kubeconfig_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "config"
    proc = run_cli(tmp_path, "run", "--standalone", SRE_AGENT_METRICS_PORT="0", SRE_AGENT_HEALTH_PORT="0",
                   KUBECONFIG=str(missing))  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr == f"sre-agent: cannot read {missing} (from KUBECONFIG): No such file or directory\n"

    proc = run_cli(tmp_path, "run", "--standalone", SRE_AGENT_KUBECONFIG=str(missing))
    assert proc.returncode == 2
    assert proc.stderr == f"sre-agent: SRE_AGENT_KUBECONFIG='{missing}': cannot read: No such file or directory\n"


def test_a_misspelt_variable_is_warned_with_the_closest_name(tmp_path: Path, busy_port: int) -> None:
    proc = run_cli(tmp_path, "run", "--standalone", SRE_AGENT_NAMESPACE="shop", SRE_AGENT_LOG_FORMAT="json",
                   SRE_AGENT_METRICS_PORT=str(busy_port), SRE_AGENT_HEALTH_PORT="0")  # fmt: skip
    assert proc.returncode == 2
    warning, error = proc.stderr.splitlines()
    record = json.loads(warning)
    assert record["message"] == "unknown variable SRE_AGENT_NAMESPACE is ignored (did you mean SRE_AGENT_NAMESPACES?)"
    assert record["logger"] == "sre_agent.operator" and record["severity"] == "warn"
    assert error.startswith(f"sre-agent: port {busy_port} is already in use")


def test_unknown_variables() -> None:
    env = {"SRE_AGENT_NAMESPACE": "x", "SRE_AGENT_LLM_MODLE": "m", "SRE_AGENT_ZZZ": "1",
           "SRE_AGENT_NAMESPACES": "x", "SRE_AGENT_CLUSTER_DIR": "/tmp/c", "HOME": "/root"}  # fmt: skip
    assert unknown_variables(env) == [
        "unknown variable SRE_AGENT_LLM_MODLE is ignored (did you mean SRE_AGENT_LLM_MODEL?)",
        "unknown variable SRE_AGENT_NAMESPACE is ignored (did you mean SRE_AGENT_NAMESPACES?)",
        "unknown variable SRE_AGENT_ZZZ is ignored",
    ]
    assert Settings.from_env(env).warnings == tuple(unknown_variables(env))
    assert Settings.from_env({"SRE_AGENT_STANDALONE": "1"}).warnings == ()


def test_every_variable_the_code_and_scripts_use_is_known() -> None:
    """A variable added to the code but not to settings.KNOWN_VARIABLES would be warned as unknown."""
    used: set[str] = set()
    for root, pattern in (("sre_agent", "*.py"), ("scripts", "*"), ("deploy", "*")):
        for path in (REPO / root).rglob(pattern):
            if path.is_file() and "__pycache__" not in path.parts:
                used |= set(re.findall(r"\bSRE_AGENT_[A-Z0-9_]*[A-Z0-9]\b", path.read_text(errors="ignore")))
    used.discard("SRE_AGENT_LLM")  # the prefix of SRE_AGENT_LLM_*, in docstrings
    assert sorted(used - KNOWN_VARIABLES) == []


@pytest.mark.parametrize("url", ["vllm:8000/v1", "localhost:11434/v1", "ftp://x/v1", "http://"])
def test_llm_urls_need_a_scheme_and_a_host(url: str) -> None:
    with pytest.raises(SettingsError, match=r"^SRE_AGENT_LLM_BASE_URL=.*must be an http:// or https:// URL"):
        Settings.from_env({"SRE_AGENT_LLM_BASE_URL": url})


# ----------------------------------------------------------------------------------- logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    kopf_objects = logging.getLogger("kopf.objects")
    filters = list(kopf_objects.filters)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    kopf_objects.filters[:] = filters


@pytest.mark.usefixtures("restore_logging")
def test_json_logs_name_their_logger_and_handler_successes_are_debug(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(Settings.from_env({"SRE_AGENT_LOG_FORMAT": "json"}))
    kopf_objects = logging.getLogger("kopf.objects")
    kopf_objects.info("Handler 'pod_event' succeeded.")
    kopf_objects.info("Handler 'pod_event' failed with an exception. Will retry.")
    logging.getLogger("sre_agent.service").info("Decided shop/web")
    records = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(r["logger"], r["message"]) for r in records] == [
        ("kopf.objects", "Handler 'pod_event' failed with an exception. Will retry."),
        ("sre_agent.service", "Decided shop/web"),
    ]


@pytest.mark.usefixtures("restore_logging")
def test_handler_successes_still_show_at_debug(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(Settings.from_env({"SRE_AGENT_LOG_LEVEL": "debug"}))
    logging.getLogger("kopf.objects").info("Handler 'pod_event' succeeded.")
    err = capsys.readouterr().err
    assert "kopf.objects" in err and "[DEBUG   ] Handler 'pod_event' succeeded." in err


# ----------------------------------------------------------------------------------- CLI


def test_version(tmp_path: Path) -> None:
    proc = run_cli(tmp_path, "--version")
    assert proc.returncode == 0
    assert re.fullmatch(r"sre-agent \d+\.\d+\.\d+\S*\n", proc.stdout), proc.stdout


def test_every_option_has_help() -> None:
    def walk(parser: argparse.ArgumentParser, where: str) -> Iterator[tuple[str, argparse.Action]]:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, f"{where} {name}")
            else:
                yield where, action

    missing = [f"{where} {'/'.join(a.option_strings) or a.dest}" for where, a in walk(build_parser(), "sre-agent")
               if not a.help or a.help == argparse.SUPPRESS]  # fmt: skip
    assert missing == []
