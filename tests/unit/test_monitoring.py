"""deploy/'s metrics Service, ServiceMonitor, PrometheusRule and Grafana dashboard use the metric
and label names the operator really exports (sre_agent/operator/metrics.py), so they cannot drift."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from sre_agent.operator.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
MONITORING = DEPLOY / "monitoring"
METRIC = re.compile(r"\bsre_agent_[a-z_]+")


def exported() -> dict[str, set[str]]:
    """Every series name /metrics can show, with its label names."""
    metrics = Metrics()
    names: dict[str, set[str]] = {}
    for collector in list(metrics.registry._collector_to_names):
        labels = set(getattr(collector, "_labelnames", ()))
        for family in collector.describe():
            suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}.get(
                family.type, [""]
            )
            for suffix in suffixes:
                names[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return names


def load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def rules() -> list[dict[str, Any]]:
    (rule,) = load(MONITORING / "prometheusrule.yaml")
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def dashboard_targets() -> list[dict[str, Any]]:
    dash = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    return [t for panel in dash["panels"] for t in panel["targets"]]


def check_expression(expr: str, where: str, names: dict[str, set[str]], legend: str = "") -> list[str]:
    problems = []
    used = set(METRIC.findall(expr))
    if not used:
        problems.append(f"{where}: uses no sre_agent metric")
    labels: set[str] = set()
    for metric in used:
        if metric not in names:
            problems.append(f"{where}: unknown metric {metric}")
        labels |= names.get(metric, set())
    wanted = set()
    for group in re.findall(r"\bby \(([^)]*)\)", expr):
        wanted |= {x.strip() for x in group.split(",") if x.strip()}
    for matcher in re.findall(r"\{([^}]*)\}", expr):
        wanted |= set(re.findall(r"([a-z_]+)\s*!?[=~]", matcher))
    wanted |= set(re.findall(r"\{\{\s*([a-z_]+)\s*\}\}", legend))
    problems += [
        f"{where}: {metric_labels} is not a label of {sorted(used)}" for metric_labels in wanted - labels
    ]
    return problems


def test_the_exported_names_are_what_the_checks_expect() -> None:
    names = exported()
    assert names["sre_agent_decisions_pending"] == {"namespace"}
    assert names["sre_agent_llm_fallbacks_total"] == set()
    assert names["sre_agent_llm_latency_seconds_bucket"] == {"outcome", "le"}
    assert "sre_agent_llm_fallbacks" not in names


def test_every_alert_uses_real_metric_and_label_names() -> None:
    names = exported()
    problems = []
    for rule in rules():
        problems += check_expression(rule["expr"], rule["alert"], names)
        for text in rule["annotations"].values():
            for label in re.findall(r"\$labels\.([a-z_]+)", text):
                if label not in re.sub(r"\s+", " ", rule["expr"]):
                    problems.append(f"{rule['alert']}: annotation uses $labels.{label}, not kept by its expr")
    assert problems == []


def test_the_alerts_cover_pending_fallbacks_llm_errors_and_blocked_actions() -> None:
    by_metric = {m: r["alert"] for r in rules() for m in METRIC.findall(r["expr"])}
    for metric in (
        "sre_agent_decision_pending_oldest_seconds",
        "sre_agent_llm_fallbacks_total",
        "sre_agent_llm_latency_seconds_count",
        "sre_agent_actions_blocked_total",
    ):
        assert metric in by_metric, metric
    assert all(r["labels"]["severity"] in {"info", "warning", "critical"} for r in rules())


def test_every_dashboard_panel_uses_real_metric_and_label_names() -> None:
    names = exported()
    problems = []
    for target in dashboard_targets():
        problems += check_expression(target["expr"], target["expr"], names, target.get("legendFormat", ""))
    assert problems == []
    shown = {m for t in dashboard_targets() for m in METRIC.findall(t["expr"])}
    assert "sre_agent_decisions_pending" in shown
    # every metric family the operator exports is on the dashboard
    families = {re.sub(r"_(total|bucket|count|sum)$", "", n) for n in names}
    assert families <= {re.sub(r"_(total|bucket|count|sum)$", "", m) for m in shown}


def test_the_service_monitor_finds_the_metrics_service_and_the_service_the_operator() -> None:
    (service,) = load(DEPLOY / "service.yaml")
    (monitor,) = load(MONITORING / "servicemonitor.yaml")
    (deployment,) = load(DEPLOY / "deployment.yaml")
    wanted = monitor["spec"]["selector"]["matchLabels"]
    assert wanted.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [service["metadata"]["namespace"]]
    (endpoint,) = monitor["spec"]["endpoints"]
    (port,) = service["spec"]["ports"]
    assert endpoint["port"] == port["name"]
    pod = deployment["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    assert port["targetPort"] in {p["name"] for p in container["ports"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SRE_AGENT_METRICS_PORT"] == str(port["port"])


def test_the_base_kustomization_names_the_image_and_leaves_monitoring_out() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    (deployment,) = load(DEPLOY / "deployment.yaml")
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    (entry,) = kustomization["images"]
    assert image.split(":")[0] == entry["name"] and entry["newTag"]
    assert "service.yaml" in kustomization["resources"]
    assert not any("monitoring" in r for r in kustomization["resources"])
    monitoring = yaml.safe_load((MONITORING / "kustomization.yaml").read_text())
    assert set(monitoring["resources"]) == {"servicemonitor.yaml", "prometheusrule.yaml"}
