"""The live operator: wires settings, adapters and the core together and runs kopf embedded.

`run_operator(settings)` is what `sre-agent run` calls. It builds every dependency once
(KubeClient, Gatherer, Pipeline with the LLM reasoner or rules, DecisionStore, Executor,
Intake, Metrics), checks that the cluster is reachable and the CRDs are installed (a one-line
error and exit code 2 otherwise), then runs `kopf.operator` with an explicit registry whose
handlers (nodes, AgentDecisions) are one call each into `AgentService` (passed through kopf's
memo), plus the lean watchers of pods, Deployments and Jobs (`operator.watch`: paginated list,
then watch; kopf's per-object state would cost too much at 10,000 pods) and two periodic loops
(expiry/retention sweep and pod re-check), all paused with kopf's peering.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import sys
import time
from datetime import UTC, datetime
from typing import Any, cast

import kopf

from sre_agent.adapters.kube.client import KubeClient, KubeError
from sre_agent.adapters.kube.decisions import API_VERSION, PLURAL, DecisionStore
from sre_agent.adapters.kube.executor import Executor
from sre_agent.adapters.kube.gatherer import Gatherer
from sre_agent.adapters.llm import OpenAIReasoner
from sre_agent.adapters.notify import ApprovalWebhook, Notifier, WebhookNotifier
from sre_agent.core.cache import DiagnosisCache
from sre_agent.core.intake import Intake
from sre_agent.core.lifecycle import DecisionMemory
from sre_agent.core.pipeline import Pipeline
from sre_agent.core.policy import ActionLedger
from sre_agent.core.redaction import RedactingFilter
from sre_agent.domain import JSON
from sre_agent.operator.metrics import Metrics
from sre_agent.operator.peering import PEERING_API, PeeringGate
from sre_agent.operator.service import AgentService, Tuning, every
from sre_agent.operator.watch import EventHandler, Watcher, while_active
from sre_agent.settings import Settings

log = logging.getLogger("sre_agent.operator")

SERVICE = "service"  # the memo key
PEERING_CHECK_SECONDS = 3  # how soon the pod watch follows a change of the active peer (one GET)


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class StartupError(Exception):
    """The operator cannot start (cluster unreachable, CRD missing, ...); one-line message."""


class LoggerName(logging.Filter):
    """Adds `logger` (the logger's name) to every record: JSON logs then say who wrote each line."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.logger = record.name
        return True


class HandlerSuccessToDebug(logging.Filter):
    """kopf logs "Handler 'x' succeeded." at info for every event: make it debug (most of the log)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not str(record.msg).endswith(" succeeded."):
            return True
        if not str(record.msg).startswith("Handler "):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def configure_logging(settings: Settings) -> None:
    level = settings.log_level.upper()
    log_format = kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.FULL
    kopf.configure(verbose=settings.log_level == "debug", log_format=log_format)
    logging.getLogger().setLevel(level)
    for handler in logging.getLogger().handlers:  # log lines that quote evidence are redacted too
        handler.addFilter(RedactingFilter())
        handler.addFilter(LoggerName())
    kopf_objects = logging.getLogger("kopf.objects")
    if not any(isinstance(f, HandlerSuccessToDebug) for f in kopf_objects.filters):
        kopf_objects.addFilter(HandlerSuccessToDebug())
    for noisy in ("aiohttp.access", "kubernetes.client.rest", "urllib3", "httpx", "openai"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def identity() -> str:
    """This replica's name among peers: the pod name in a cluster (the hostname), plus the pid."""
    return f"sre-agent@{socket.gethostname()}/{os.getpid()}"


def build_registry() -> kopf.OperatorRegistry:
    """The kopf handlers: each is one call into the AgentService in memo."""
    registry = kopf.OperatorRegistry()

    def body(event: kopf.RawEvent) -> JSON:
        return cast(JSON, event["object"])

    def service_of(memo: Any) -> AgentService:
        svc: AgentService = memo[SERVICE]
        return svc

    @kopf.on.login(registry=registry)
    def login(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
        # kopf logs in with exactly the credentials of our own client (in-cluster or kubeconfig).
        creds = service_of(memo).kube.credentials()
        return kopf.ConnectionInfo(
            server=creds.server,
            ca_path=creds.ca_path,
            insecure=creds.insecure,
            scheme="Bearer" if creds.token else None,
            token=creds.token,
            certificate_path=creds.certificate_path,
            private_key_path=creds.private_key_path,
            default_namespace=creds.default_namespace,
        )

    @kopf.on.event("v1", "nodes", registry=registry)
    async def node_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
        if event["type"] == "DELETED":
            await service_of(memo).forget_node(str(body(event).get("metadata", {}).get("name", "")))
        else:
            await service_of(memo).on_node(body(event))

    @kopf.on.event("sre.agentops.dev", "v1alpha1", "agentdecisions", registry=registry)
    async def decision_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
        if event["type"] == "DELETED":
            service_of(memo).forget_decision(body(event))
        else:
            await service_of(memo).on_decision(body(event))

    return registry


def pod_handler(service: AgentService) -> EventHandler:
    """What the pod watcher calls for each event: one call into the service."""

    async def pod_event(kind: str, pod: JSON) -> None:
        if kind == "DELETED":
            service.forget_pod(pod)
        else:
            await service.on_pod(pod)

    return pod_event


def workload_handler(service: AgentService) -> EventHandler:
    """What the Deployment and Job watchers call: a stalled rollout or a failed Job, which shows on
    no pod, is decided about the workload."""

    async def workload_event(kind: str, workload: JSON) -> None:
        if kind != "DELETED":
            await service.on_workload(workload)

    return workload_event


def watchers(kube: KubeClient, service: AgentService, namespaces: tuple[str, ...]) -> list[Watcher]:
    """The lean watches (operator.watch) of the kinds a cluster has thousands of: pods, and the
    Deployments and Jobs whose own failures no pod shows."""
    workloads = workload_handler(service)
    return [
        Watcher(kube, pod_handler(service), namespaces=namespaces),
        Watcher(kube, workloads, api_version="apps/v1", plural="deployments", namespaces=namespaces),
        Watcher(kube, workloads, api_version="batch/v1", plural="jobs", namespaces=namespaces),
    ]


def kopf_settings(settings: Settings) -> kopf.OperatorSettings:
    ks = kopf.OperatorSettings()
    ks.posting.level = logging.WARNING  # k8s Events only for problems, not for every handler run
    ks.peering.priority = settings.peering_priority
    ks.networking.request_timeout = 120
    ks.watching.server_timeout = 300
    ks.watching.client_timeout = 330
    return ks


def build_service(settings: Settings, kube: KubeClient, metrics: Metrics, who: str) -> AgentService:
    clock = SystemClock()
    ledger = ActionLedger()
    reasoner = None
    if settings.llm is not None:
        reasoner = OpenAIReasoner(settings.llm, on_call=metrics.on_llm_call)
        log.info(
            "LLM reasoner: model %s at %s (%s)",
            settings.llm.model,
            settings.llm.base_url or "api.openai.com",
            reasoner.reasoner_id,
        )
    else:
        log.info("No LLM configured (SRE_AGENT_LLM_BASE_URL / SRE_AGENT_LLM_API_KEY unset): rules only")
    pipeline = Pipeline(
        policy=settings.policy,
        clock=clock,
        reasoner=reasoner,
        cache=DiagnosisCache(time.monotonic, ttl_seconds=settings.cache_ttl_seconds) if reasoner else None,
        ledger=ledger,
        thresholds=settings.thresholds,
        observer=metrics.observer(),
    )
    notifier: Notifier | None = WebhookNotifier(settings.webhook_url) if settings.webhook_url else None
    return AgentService(
        kube=kube,
        clock=clock,
        pipeline=pipeline,
        gatherer=Gatherer(kube, clock),
        store=DecisionStore(kube, clock),
        executor=Executor(kube, settings.policy, ledger, clock, notifier=notifier),
        intake=Intake(
            clock, cooldown_seconds=settings.cooldown_seconds, window_seconds=settings.group_window_seconds
        ),
        ledger=ledger,
        metrics=metrics,
        memory=DecisionMemory(settings.policy.suppression),
        approval_webhook=ApprovalWebhook(settings.approval_webhook_url, settings.approval_webhook_format)
        if settings.approval_webhook_url
        else None,
        tuning=Tuning(
            decision_ttl_seconds=settings.decision_ttl_seconds,
            retention_seconds=settings.retention_seconds,
            namespaces=settings.namespaces,
            thresholds=settings.thresholds,
            concurrency=settings.llm_concurrency,
            identity=who,
        ),
    )


async def preflight(kube: KubeClient, settings: Settings) -> None:
    """Fail fast, in one line, on what a user can fix: no cluster, no CRD, no peering CRD."""
    ns = settings.namespaces[0] if settings.namespaces else None
    try:
        await kube.list_objects(API_VERSION, PLURAL, ns, limit=1)
    except KubeError as exc:
        if exc.status == 404:
            raise StartupError(
                "the AgentDecision CRD is not installed (kubectl apply -f crds/agentdecisions.yaml)"
            ) from None
        if exc.status in (401, 403):
            raise StartupError(
                f"not allowed to list AgentDecisions ({exc}); apply deploy/rbac.yaml"
            ) from None
        raise StartupError(f"cannot reach the Kubernetes API: {exc}") from None
    if settings.standalone:
        return
    # kopf's mandatory peering needs its peering object: create it once (409: it exists).
    targets: list[str | None] = list(settings.namespaces) or [None]
    for target in targets:
        plural = "kopfpeerings" if target else "clusterkopfpeerings"
        kind = "KopfPeering" if target else "ClusterKopfPeering"
        body: dict[str, Any] = {
            "apiVersion": PEERING_API,
            "kind": kind,
            "metadata": {"name": settings.peering_name},
        }
        try:
            await kube.create(PEERING_API, plural, target, body)
        except KubeError as exc:
            if exc.status == 409:
                continue
            if exc.status == 404:
                raise StartupError(
                    "kopf's peering CRDs are not installed (kubectl apply -f crds/kopf-peering.yaml), "
                    "or run with --standalone"
                ) from None
            if exc.status == 403 and await kube.get(PEERING_API, plural, target, settings.peering_name):
                continue
            raise StartupError(f"cannot create the peering object {settings.peering_name}: {exc}") from None


async def operate(settings: Settings, kube: KubeClient) -> int:
    metrics = Metrics()
    who = identity()
    service = build_service(settings, kube, metrics, who)
    await preflight(kube, settings)
    if settings.metrics_port:
        try:
            metrics.serve(settings.metrics_port)
        except OSError as exc:
            raise port_error("SRE_AGENT_METRICS_PORT", settings.metrics_port, exc) from None
        log.info("Serving Prometheus metrics on :%d/metrics", settings.metrics_port)
    await service.start()
    gate = PeeringGate(
        None if settings.standalone else kube,
        name=settings.peering_name,
        identity=who,
        priority=settings.peering_priority,
        namespaces=settings.namespaces,
        on_activate=service.rebuild,
        on_pause=service.standing_by,
    )
    loops = [
        asyncio.create_task(
            every(settings.sweep_seconds, service.sweep, "expiry/retention sweep", gate.active)
        )
    ]
    # Pods, Deployments and Jobs are watched by our own lean watchers (operator.watch), not by kopf,
    # while this replica is the active peer; kopf keeps nodes and AgentDecisions (few objects).
    lean = watchers(kube, service, settings.namespaces)

    async def watch_all() -> None:
        await asyncio.gather(*(w.run() for w in lean))

    loops.append(
        asyncio.create_task(while_active(gate.active_and_registered, watch_all, PEERING_CHECK_SECONDS))
    )
    if settings.resync_seconds:
        loops.append(
            asyncio.create_task(every(settings.resync_seconds, service.resync, "pod re-check", gate.active))
        )
    log.info(
        "Starting: policy %s (%s), namespaces %s, %s",
        settings.policy.name,
        settings.policy_path or "built-in",
        ",".join(settings.namespaces) or "all",
        "standalone" if settings.standalone else f"peering {settings.peering_name} as {who}",
    )
    memo = kopf.Memo()
    memo[SERVICE] = service
    try:
        await kopf.operator(
            registry=build_registry(),
            settings=kopf_settings(settings),
            memo=memo,
            identity=cast(Any, who),  # kopf types it as NewType("Identity", str)
            standalone=settings.standalone,
            peering_name=None if settings.standalone else settings.peering_name,
            priority=settings.peering_priority,
            liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz"
            if settings.health_port
            else None,
            clusterwide=not settings.namespaces,
            namespaces=list(settings.namespaces),
        )
    finally:
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        reasoner = service.pipeline.reasoner
        if isinstance(reasoner, OpenAIReasoner):
            await reasoner.aclose()
    return 0


def port_error(variable: str, port: int, exc: OSError) -> StartupError:
    why = "is already in use" if exc.errno == errno.EADDRINUSE else f"cannot be opened ({exc.strerror})"
    return StartupError(f"port {port} {why}: set {variable} to a free port (0 turns it off)")


def check_ports(settings: Settings) -> None:
    """Fail before connecting to anything when a port we must listen on is taken."""
    for variable, port in (
        ("SRE_AGENT_METRICS_PORT", settings.metrics_port),
        ("SRE_AGENT_HEALTH_PORT", settings.health_port),
    ):
        if not port:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the real servers do
            try:
                probe.bind(("0.0.0.0", port))
            except OSError as exc:
                raise port_error(variable, port, exc) from None


def credentials_error(settings: Settings, exc: Exception) -> str:
    """One line naming the kubeconfig that could not be used, and the variable that chose it."""
    if settings.kubeconfig:
        origin, paths = "SRE_AGENT_KUBECONFIG", [settings.kubeconfig]
    elif settings.kubeconfig_env:
        origin, paths = "KUBECONFIG", [p for p in settings.kubeconfig_env.split(os.pathsep) if p]
    else:
        origin, paths = "the default kubeconfig (not in a cluster)", [os.path.expanduser("~/.kube/config")]
    for path in paths:
        try:
            with open(path, "rb"):
                pass
        except OSError as error:
            return f"cannot read {path} (from {origin}): {error.strerror}"
    return (
        f"cannot load Kubernetes credentials from {', '.join(paths)} ({origin}): {' '.join(str(exc).split())}"
    )


def run_operator(settings: Settings) -> int:
    """Run until SIGINT/SIGTERM. 0 on a clean stop; 2 when it cannot start for a reason a user can fix."""
    configure_logging(settings)
    for warning in settings.warnings:
        log.warning("%s", warning)
    try:
        check_ports(settings)
    except StartupError as exc:
        print(f"sre-agent: {exc}", file=sys.stderr)
        return 2
    try:
        kube = KubeClient.connect(settings.kubeconfig)
    except Exception as exc:  # the kubernetes config loader raises several unrelated types
        print(f"sre-agent: {credentials_error(settings, exc)}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(operate(settings, kube))
    except StartupError as exc:
        print(f"sre-agent: {exc}", file=sys.stderr)
        return 2
    finally:
        kube.close()
