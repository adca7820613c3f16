"""The storm benchmark: N crash-looping pods over M Deployments on kwok, operator vs a per-event baseline.

    python bench/storm.py [--pods 1000] [--deployments 50] [--seconds 300] [--llm-delay 1.0]
                          [--nodes 10] [--only operator,baseline] [--keep DIR]

Starts the project's own control plane (scripts/cluster, no real node) and kwok (scripts/kwok)
with --nodes simulated nodes, then runs the same storm twice, each in a fresh namespace:

1. `sre-agent run --standalone -n NS` as a subprocess (a workstation run, default settings and
   default policy), talking to the local OpenAI-compatible test server (tests/fake_llm.py) that
   answers every call after --llm-delay seconds and records it;
2. bench/baseline_operator.py, a kopf handler that asks the LLM on every event of an unhealthy pod.

Each storm creates M Deployments of N/M replicas whose pods kwok crash-loops (label
sim.sre.agentops.dev/crashloop=true: ~2 s running, CrashLoopBackOff for ~5 s, again; pods pass the
HighRestarts threshold of 5 restarts after ~35 s) and lasts --seconds from the first Deployment.
Counted:

- LLM calls, attributed to Deployments by the Deployment name in the prompt;
- AgentDecisions per Deployment (with the symptom of each when there is more than one);
- crash-to-decision latency: from the moment this process first sees (watch) a pod of the
  Deployment waiting or terminated, to the moment it sees the Deployment's first AgentDecision
  (same clock, same watch delay on both ends); also crash-to-LLM-request, and the same latency
  from the server's own second-resolution timestamps (the first lastState.terminated.finishedAt
  to the decision's creationTimestamp) as a cross-check;
- RSS (peak VmHWM and end VmRSS) and CPU seconds (utime + stime) of the operator process, from /proc;
- contention: CPU seconds the whole machine spent during the storm, the part of it the cluster,
  kwok, the operator and this process account for, and the rest (other work on the machine).

Prints one JSON document (like bench/suite.py). Exit 0 even when a check fails: the JSON says so.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.kwokbench import KwokCluster, deployment  # noqa: E402

DEPLOYMENT_PREFIX = "crash-"
_DEPLOYMENT_NAME = re.compile(rf"\b{DEPLOYMENT_PREFIX}\d{{3,}}\b")
CRASHLOOP_LABEL = "sim.sre.agentops.dev/crashloop"  # scripts/kwok-stages.yaml
GROUP, VERSION, PLURAL = "sre.agentops.dev", "v1alpha1", "agentdecisions"
WORKLOAD_ANNOTATION = "sre.agentops.dev/workload"
HIGH_RESTARTS = 5  # core.symptoms.Thresholds.high_restarts, the default the operator runs with
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# ------------------------------------------------------------------ pure helpers (tests/unit/test_bench_storm.py)


def deployment_name(index: int) -> str:
    return f"{DEPLOYMENT_PREFIX}{index:03d}"


def replicas_per_deployment(pods: int, deployments: int) -> list[int]:
    """`pods` spread over `deployments` as evenly as possible (the first ones get the remainder)."""
    if deployments < 1 or pods < deployments:
        raise ValueError("need at least one Deployment and one pod per Deployment")
    base, extra = divmod(pods, deployments)
    return [base + (1 if i < extra else 0) for i in range(deployments)]


def percentile(values: Iterable[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary(values: Iterable[float]) -> dict[str, Any]:
    data = list(values)

    def r(x: float | None) -> float | None:
        return None if x is None else round(x, 2)

    return {
        "n": len(data),
        "p50": r(percentile(data, 50)),
        "p95": r(percentile(data, 95)),
        "max": r(max(data) if data else None),
    }


def spread(counts: list[int]) -> dict[Any, Any]:
    """How many Deployments had each count ({1: 50}), or, when the counts vary a lot, min/p50/max."""
    histogram = Counter(counts)
    if len(histogram) <= 5:
        return dict(sorted(histogram.items()))
    return {"min": min(counts), "p50": percentile(counts, 50), "max": max(counts)}


def deployments_named(text: str) -> set[str]:
    """The storm's Deployment names in a text (a prompt, a workload annotation, a pod name)."""
    return set(_DEPLOYMENT_NAME.findall(text))


def request_text(body: Mapping[str, Any]) -> str:
    """Every message content of a chat completion request, joined."""
    parts: list[str] = []
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, Mapping) else message
        if isinstance(content, list):
            parts.extend(str(p.get("text", p)) if isinstance(p, Mapping) else str(p) for p in content)
        elif content is not None:
            parts.append(str(content))
    return "\n".join(parts)


def decision_deployment(obj: Mapping[str, Any]) -> str | None:
    """The storm Deployment an AgentDecision is about: its workload annotation, else owner or target."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    for text in (
        str((meta.get("annotations") or {}).get(WORKLOAD_ANNOTATION) or ""),
        str((spec.get("owner") or {}).get("name") or ""),
        str((spec.get("target") or {}).get("name") or ""),
    ):
        names = deployments_named(text)
        if len(names) == 1:
            return names.pop()
    return None


def parse_time(value: Any) -> float | None:
    """An RFC 3339 timestamp as Kubernetes writes it, as epoch seconds; None when absent or bad."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC).timestamp()
    except ValueError:
        return None


def crashed(pod: Mapping[str, Any]) -> bool:
    """A container of the pod is waiting or terminated, or has restarted: it has crashed at least once."""
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        state = cs.get("state") or {}
        if "waiting" in state or "terminated" in state or int(cs.get("restartCount") or 0) > 0:
            return True
    return False


def first_finished_at(pod: Mapping[str, Any]) -> float | None:
    """The earliest terminated finishedAt the pod's status shows (state or lastState)."""
    times = []
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        for key in ("state", "lastState"):
            terminated = (cs.get(key) or {}).get("terminated") or {}
            at = parse_time(terminated.get("finishedAt"))
            if at is not None:
                times.append(at)
    return min(times) if times else None


def restart_count(pod: Mapping[str, Any]) -> int:
    return max(
        (int(cs.get("restartCount") or 0) for cs in (pod.get("status") or {}).get("containerStatuses") or []),
        default=0,
    )


@dataclass(frozen=True)
class ProcStat:
    rss_bytes: int
    peak_rss_bytes: int
    cpu_seconds: float


def parse_proc_status(text: str) -> tuple[int, int]:
    """(VmRSS, VmHWM) in bytes from /proc/PID/status."""
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            number, _, unit = rest.strip().partition(" ")
            values[key] = int(number) * (1024 if unit.strip().lower() == "kb" else 1)
    return values.get("VmRSS", 0), values.get("VmHWM", 0)


def parse_proc_cpu(stat: str, ticks: int = CLK_TCK) -> float:
    """utime + stime in seconds from /proc/PID/stat (the command may contain spaces and parentheses)."""
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / ticks


def tenth_median(samples: list[int], tenth: int) -> int:
    """The median of the `tenth`-th tenth (0-9) of the samples, in time order."""
    size = len(samples) // 10
    part = sorted(samples[tenth * size : (tenth + 1) * size] if tenth < 9 else samples[9 * size :])
    return part[len(part) // 2]


def proc_stat(pid: int) -> ProcStat | None:
    try:
        rss, hwm = parse_proc_status(Path(f"/proc/{pid}/status").read_text())
        cpu = parse_proc_cpu(Path(f"/proc/{pid}/stat").read_text())
    except (OSError, IndexError, ValueError):
        return None
    return ProcStat(rss, hwm, cpu)


def machine_cpu_seconds(text: str, ticks: int = CLK_TCK) -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat's first line."""
    fields = [int(x) for x in text.splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user/nice
    return (total - idle) / ticks, total / ticks


def parse_pids(state: str) -> dict[str, int]:
    """NAME_PID=123 lines of a scripts/cluster state file."""
    out = {}
    for line in state.splitlines():
        match = re.fullmatch(r"([A-Z]+)_PID=(\d+)", line.strip())
        if match:
            out[match[1].lower()] = int(match[2])
    return out


def mb(n: int) -> float:
    return round(n / 2**20, 1)


# ------------------------------------------------------------------ the cluster (bench/kwokbench.py)


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def note(message: str) -> None:
    print(f"storm: {message}", file=sys.stderr, flush=True)


def cluster_pids(kc: KwokCluster) -> dict[str, int]:
    """The PIDs of the control plane's processes and kwok (for their CPU seconds)."""
    state, kwok = kc.state_dir / "state", kc.state_dir / "kwok.pid"
    found = parse_pids(state.read_text()) if state.exists() else {}
    found.pop("watch", None)
    if kwok.exists() and kwok.read_text().strip().isdigit():
        found["kwok"] = int(kwok.read_text().strip())
    return found


def decisions_listable(kc: KwokCluster) -> bool:
    """A new CRD answers 429 for a moment after it is Established."""
    try:
        kc.kubectl("get", PLURAL, "-A")
        return True
    except RuntimeError:
        return False


def delete_namespace(kc: KwokCluster, name: str) -> None:
    """Delete the Deployments, force the pods away, delete the namespace; wait until no pod is left."""
    from kubernetes import client

    core, apps = client.CoreV1Api(kc.api), client.AppsV1Api(kc.api)
    apps.delete_collection_namespaced_deployment(
        name, propagation_policy="Background", _preload_content=False
    )
    apps.delete_collection_namespaced_replica_set(
        name, propagation_policy="Background", _preload_content=False
    )

    def no_pods() -> bool:
        core.delete_collection_namespaced_pod(name, grace_period_seconds=0, _preload_content=False)
        resp: Any = core.list_namespaced_pod(name, limit=1, _preload_content=False)
        return not json.loads(resp.data)["items"]

    wait_for(no_pods, 300, f"the pods of {name} to go", interval=2)
    core.delete_namespace(name, propagation_policy="Background", _preload_content=False)


# ------------------------------------------------------------------ watching


class Watcher(threading.Thread):
    """A raw watch (list, then watch from its resourceVersion, resumed on every end) calling
    `on_event(type, object, received_at)` with time.time() of receipt."""

    def __init__(
        self, name: str, lister: Callable[..., Any], on_event: Callable[[str, dict[str, Any], float], None]
    ):
        super().__init__(name=name, daemon=True)
        self.lister = lister
        self.on_event = on_event
        self.stopping = threading.Event()
        self.events = 0
        self.errors = 0

    def run(self) -> None:
        from kubernetes.watch.watch import iter_resp_lines

        rv = ""
        while not self.stopping.is_set():
            try:
                if not rv:
                    listed = json.loads(self.lister(_preload_content=False).data)
                    now = time.time()
                    for item in listed["items"]:
                        self.on_event("ADDED", item, now)
                    rv = listed["metadata"]["resourceVersion"]
                resp = self.lister(
                    watch=True, resource_version=rv, allow_watch_bookmarks=True, timeout_seconds=5,
                    _preload_content=False, _request_timeout=30,
                )  # fmt: skip
                try:
                    for line in iter_resp_lines(resp):  # type: ignore[no-untyped-call]
                        received = time.time()
                        event = json.loads(line)
                        kind, obj = event.get("type"), event.get("object") or {}
                        if kind == "ERROR":
                            rv = ""  # 410 Gone: list again
                            break
                        rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                        if kind in ("ADDED", "MODIFIED", "DELETED"):
                            self.events += 1
                            self.on_event(kind, obj, received)
                finally:
                    resp.release_conn()
            except Exception:
                self.errors += 1
                time.sleep(1)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=40)


@dataclass
class Observed:
    """What the watches saw during one storm (times are time.time() of receipt)."""

    first_crash: dict[str, float] = field(default_factory=dict)  # Deployment -> first pod seen crashed
    first_finished: dict[str, float] = field(default_factory=dict)  # Deployment -> earliest finishedAt
    restarts: dict[str, int] = field(default_factory=dict)  # pod -> restartCount last seen
    decisions: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> object
    decision_seen: dict[str, float] = field(default_factory=dict)  # name -> first receipt
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_pod(self, kind: str, pod: dict[str, Any], received: float) -> None:
        meta = pod.get("metadata") or {}
        app = str((meta.get("labels") or {}).get("app") or "")
        if kind == "DELETED" or not app:
            return
        with self.lock:
            self.restarts[str(meta.get("name"))] = restart_count(pod)
            if crashed(pod):
                self.first_crash.setdefault(app, received)
                finished = first_finished_at(pod)
                if finished is not None and finished < self.first_finished.get(app, math.inf):
                    self.first_finished[app] = finished

    def on_decision(self, kind: str, obj: dict[str, Any], received: float) -> None:
        name = str((obj.get("metadata") or {}).get("name") or "")
        with self.lock:
            if kind != "DELETED":
                self.decisions[name] = obj
            self.decision_seen.setdefault(name, received)


class LLMRecorder:
    """tests/fake_llm.FakeLLM answering every call after `delay` s; counts calls per Deployment and
    keeps no request bodies (the baseline sends tens of thousands)."""

    def __init__(self, delay: float) -> None:
        from tests.fake_llm import FakeLLM, answer_for, hang, reply

        # The baseline opens hundreds of connections at once: a listen backlog of 5 would drop them.
        http.server.ThreadingHTTPServer.request_queue_size = 1024
        self.fake = FakeLLM()
        self.fake.default = reply(answer_for("app_error"))
        self.delay = delay
        self.calls = 0
        self.per_deployment: Counter[str] = Counter()
        self.unattributed = 0
        self.first_call: dict[str, float] = {}
        self._lock = threading.Lock()
        self._hang = hang(delay)

        def responder(body: dict[str, Any]) -> Any:
            received = time.time()
            names = deployments_named(request_text(body))
            with self._lock:
                self.calls += 1
                if len(names) == 1:
                    name = names.pop()
                    self.per_deployment[name] += 1
                    self.first_call.setdefault(name, received)
                else:
                    self.unattributed += 1
            with self.fake._lock:  # keep no bodies: only the counts above matter here
                self.fake.requests.clear()
                self.fake.paths.clear()
                self.fake.headers.clear()
            return self._hang

        self.fake.responder = responder

    def __enter__(self) -> LLMRecorder:
        self.fake.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.fake.stop()


# ------------------------------------------------------------------ one storm


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_process(
    which: str, kc: KwokCluster, namespace: str, llm_url: str, log_path: Path
) -> tuple[subprocess.Popen[bytes], int]:
    """The operator (`sre-agent run`) or the baseline, against the cluster, logging to `log_path`."""
    env = {k: v for k, v in kc.env.items() if not k.startswith("SRE_AGENT_")}
    env["KUBECONFIG"] = str(kc.kubeconfig)
    metrics_port = 0
    if which == "operator":
        metrics_port = free_port()
        env.update(
            SRE_AGENT_KUBECONFIG=str(kc.kubeconfig), SRE_AGENT_METRICS_PORT=str(metrics_port),
            SRE_AGENT_HEALTH_PORT="0", SRE_AGENT_LLM_BASE_URL=llm_url, SRE_AGENT_LLM_MODEL="storm",
            SRE_AGENT_LLM_API_KEY="storm", SRE_AGENT_LLM_TIMEOUT="30",
        )  # fmt: skip
        argv = [sys.executable, "-m", "sre_agent.cli", "run", "--standalone", "-n", namespace]
    else:
        env.update(BASELINE_LLM_BASE_URL=llm_url, BASELINE_LLM_MODEL="storm", BASELINE_LLM_API_KEY="storm")
        argv = [sys.executable, str(ROOT / "bench" / "baseline_operator.py"), namespace]
    with log_path.open("ab") as log:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def started() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"{which} exited at start:\n{log_path.read_text(errors='replace')[-3000:]}")
        return "Initial authentication has finished" in log_path.read_text(errors="replace")

    wait_for(started, 90, f"the {which} to start")
    time.sleep(2)  # its watches are up once it has listed; give them a moment
    return proc, metrics_port


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def scrape(port: int) -> dict[str, float]:
    """The operator's own sre_agent_* counters (summed over labels)."""
    if not port:
        return {}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    totals: dict[str, float] = defaultdict(float)
    for line in text.splitlines():
        if line.startswith("sre_agent_") and not line.startswith("#"):
            head, _, value = line.rpartition(" ")
            metric = head.partition("{")[0]
            if metric.endswith(("_total", "_count")):
                with contextlib.suppress(ValueError):
                    totals[metric] += float(value)
    return dict(totals)


def run_storm(which: str, kc: KwokCluster, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from kubernetes import client

    namespace = f"storm-{which}"
    names = [deployment_name(i) for i in range(args.deployments)]
    replicas = replicas_per_deployment(args.pods, args.deployments)
    kc.create_namespace(namespace)
    observed = Observed()
    core, custom = client.CoreV1Api(kc.api), client.CustomObjectsApi(kc.api)
    pod_watch = Watcher("pods", lambda **kw: core.list_namespaced_pod(namespace, **kw), observed.on_pod)
    decision_watch = Watcher(
        "decisions",
        lambda **kw: custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, **kw),
        observed.on_decision,
    )
    log_path = workdir / f"{which}.log"
    own_pid = os.getpid()
    with LLMRecorder(args.llm_delay) as llm:
        proc, metrics_port = start_process(which, kc, namespace, llm.fake.base_url, log_path)
        try:
            pod_watch.start()
            decision_watch.start()
            pids = cluster_pids(kc)
            ours = [proc.pid, own_pid, *pids.values()]
            cpu_before = {pid: s.cpu_seconds for pid in ours if (s := proc_stat(pid))}
            machine_before = machine_cpu_seconds(Path("/proc/stat").read_text())
            load_before = os.getloadavg()[0]
            note(
                f"{which}: creating {args.deployments} Deployments, {args.pods} pods; storm of {args.seconds} s"
            )
            started = time.time()
            kc.create_objects(
                namespace,
                [
                    deployment(name, kc.nodes[i % len(kc.nodes)], n, crashloop=True)
                    for i, (name, n) in enumerate(zip(names, replicas, strict=True))
                ],
            )
            rss_samples = []
            while time.time() - started < args.seconds:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{which} exited during the storm:\n{log_path.read_text(errors='replace')[-3000:]}"
                    )
                stat = proc_stat(proc.pid)
                if stat:
                    rss_samples.append(stat.rss_bytes)
                time.sleep(1)
            elapsed = time.time() - started
            end = proc_stat(proc.pid)
            cpu_after = {pid: s.cpu_seconds for pid in ours if (s := proc_stat(pid))}
            machine_after = machine_cpu_seconds(Path("/proc/stat").read_text())
            load_after = os.getloadavg()[0]
            metrics = scrape(metrics_port)
        finally:
            stop_process(proc)
            pod_watch.stop()
            decision_watch.stop()
        calls, per_deployment, unattributed = llm.calls, dict(llm.per_deployment), llm.unattributed
        first_call = dict(llm.first_call)
    # The decisions as they are now (the watch may have missed a late annotation).
    resp: Any = custom.list_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, _preload_content=False
    )
    listed = json.loads(resp.data)["items"]
    with observed.lock:
        for item in listed:
            observed.decisions[item["metadata"]["name"]] = item
        decisions = dict(observed.decisions)
        seen = dict(observed.decision_seen)
        first_crash, first_finished = dict(observed.first_crash), dict(observed.first_finished)
        restarts = dict(observed.restarts)
    note(f"{which}: {calls} LLM calls, {len(decisions)} decisions; cleaning up")
    delete_namespace(kc, namespace)

    ours_cpu = sum(cpu_after.get(pid, 0) - cpu_before.get(pid, 0) for pid in cpu_before)
    busy = machine_after[0] - machine_before[0]
    wall = machine_after[1] - machine_before[1]
    result: dict[str, Any] = {
        "seconds": round(elapsed),
        "llm_calls": calls,
        "llm_calls_per_deployment": spread([per_deployment.get(n, 0) for n in names]),
        "llm_calls_unattributed": unattributed,
        "pods_seen": len(restarts),
        "pods_past_high_restarts": sum(1 for r in restarts.values() if r >= HIGH_RESTARTS),
        "max_restart_count": max(restarts.values(), default=0),
        "watch_events": {"pods": pod_watch.events, "decisions": decision_watch.events},
        "process": {
            "rss_mb_peak": mb(end.peak_rss_bytes) if end else None,
            "rss_mb_end": mb(end.rss_bytes) if end else None,
            "rss_mb_median": mb(sorted(rss_samples)[len(rss_samples) // 2]) if rss_samples else None,
            # Flat memory: the median RSS of the run's second tenth (start-up done) against its last tenth.
            "rss_mb_median_early": mb(tenth_median(rss_samples, 1)) if len(rss_samples) >= 10 else None,
            "rss_mb_median_late": mb(tenth_median(rss_samples, 9)) if len(rss_samples) >= 10 else None,
            "cpu_seconds": round(cpu_after.get(proc.pid, 0) - cpu_before.get(proc.pid, 0), 1),
        },
        "contention": {
            "cores": os.cpu_count(),
            "load_average_1m": [round(load_before, 2), round(load_after, 2)],
            "machine_cpu_busy_fraction": round(busy / wall, 2) if wall else None,
            "machine_cpu_seconds": round(busy, 1),
            "ours_cpu_seconds": round(ours_cpu, 1),
            "ours_by_process": {
                label: round(cpu_after.get(pid, 0) - cpu_before.get(pid, 0), 1)
                for label, pid in [(which, proc.pid), ("bench", own_pid), *pids.items()]
                if pid in cpu_before
            },
            "others_cpu_seconds": round(busy - ours_cpu, 1),
        },
    }
    if which == "operator":
        result.update(decision_figures(names, decisions, seen, first_crash, first_finished, first_call))
        result["operator_metrics"] = {k: v for k, v in sorted(metrics.items()) if v}
    return result


def decision_figures(
    names: list[str],
    decisions: Mapping[str, Mapping[str, Any]],
    seen: Mapping[str, float],
    first_crash: Mapping[str, float],
    first_finished: Mapping[str, float],
    first_call: Mapping[str, float],
) -> dict[str, Any]:
    """Decisions per Deployment and crash-to-decision latencies, from what the storm observed."""
    per: dict[str, list[tuple[float, str, Mapping[str, Any]]]] = defaultdict(list)
    unattributed = 0
    for name, obj in decisions.items():
        deployment = decision_deployment(obj)
        if deployment is None:
            unattributed += 1
            continue
        per[deployment].append((seen.get(name, math.inf), name, obj))
    for items in per.values():
        items.sort(key=lambda t: t[0])
    latency, to_llm, by_timestamps = [], [], []
    for deployment, items in per.items():
        crash = first_crash.get(deployment)
        first_seen, _, obj = items[0]
        if crash is not None and first_seen != math.inf:
            latency.append(max(0.0, first_seen - crash))
            if deployment in first_call:
                to_llm.append(max(0.0, first_call[deployment] - crash))
        created = parse_time((obj.get("metadata") or {}).get("creationTimestamp"))
        finished = first_finished.get(deployment)
        if created is not None and finished is not None:
            by_timestamps.append(created - finished)
    extra = {
        deployment: [
            f"{name}: {(obj.get('spec') or {}).get('symptom')}, {(obj.get('status') or {}).get('phase')}"
            for _, name, obj in items
        ]
        for deployment, items in sorted(per.items())
        if len(items) > 1
    }
    sources = Counter(str((obj.get("spec") or {}).get("source")) for obj in decisions.values())
    return {
        "decisions": len(decisions),
        "decisions_per_deployment": dict(sorted(Counter(len(per.get(n, [])) for n in names).items())),
        "decisions_unattributed": unattributed,
        "decision_sources": dict(sources),
        "deployments_without_decision": [n for n in names if n not in per],
        "deployments_with_more_than_one_decision": extra,
        "crash_to_decision_seconds": summary(latency),
        "crash_to_llm_request_seconds": summary(to_llm),
        "crash_to_decision_seconds_from_server_timestamps": summary(by_timestamps),
    }


def checks(result: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    op, base = result.get("operator"), result.get("baseline")
    if op:
        out["llm_calls_equal_deployments"] = op["llm_calls"] == args.deployments
        out["one_decision_per_deployment"] = op["decisions_per_deployment"] == {1: args.deployments}
        p50 = op["crash_to_decision_seconds"]["p50"]
        out["crash_to_decision_p50_within_1s_of_llm"] = p50 is not None and p50 <= args.llm_delay + 1.0
    if op and base:
        ratio = base["llm_calls"] / max(op["llm_calls"], 1)
        result["llm_call_ratio_baseline_to_operator"] = round(ratio, 1)
        out["ratio_at_least_30x"] = ratio >= 30
    return out


def machine() -> dict[str, Any]:
    from bench.suite import machine as suite_machine

    return suite_machine()


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--deployments", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=300, help="how long each storm lasts")
    parser.add_argument("--llm-delay", type=float, default=1.0, help="seconds the LLM server takes per call")
    parser.add_argument("--nodes", type=int, default=10, help="kwok nodes the Deployments are spread over")
    parser.add_argument("--only", default="operator,baseline", help="comma list of operator, baseline")
    parser.add_argument("--keep", type=Path, help="keep the cluster state and process logs in this directory")
    return parser


def source() -> dict[str, Any]:
    """The commit the operator runs from, and the files of sre_agent/ changed since (a shared checkout)."""

    def git(*args: str) -> str:
        result = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False)
        return result.stdout.rstrip() if result.returncode == 0 else ""

    return {
        "root": str(ROOT),
        "commit": git("rev-parse", "--short", "HEAD") or None,  # None: not a checkout (git archive)
        "sre_agent_uncommitted": [
            line[3:] for line in git("status", "--porcelain", "sre_agent").splitlines()
        ],
    }


def bench_storm(args: argparse.Namespace) -> dict[str, Any]:
    """Both storms (or those of args.only) on one kwok cluster; the figures and the checks."""
    replicas_per_deployment(args.pods, args.deployments)  # ValueError before anything starts
    only = [w for w in ("operator", "baseline") if w in args.only.split(",")]
    if not only:
        raise ValueError("--only: name operator, baseline or both")
    workdir = Path(tempfile.mkdtemp(prefix="sre-agent-storm-")) if args.keep is None else args.keep.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "config": {
            "pods": args.pods, "deployments": args.deployments, "seconds": args.seconds,
            "llm_delay_seconds": args.llm_delay, "kwok_nodes": args.nodes, "crash_cycle": "~2 s running, ~5 s back-off",
        },
        "source": source(),
    }  # fmt: skip
    try:
        with KwokCluster(nodes=args.nodes, node_prefix="kwok-storm", log=note) as kc:
            wait_for(lambda: decisions_listable(kc), 60, "AgentDecisions to list")
            for which in only:
                result[which] = run_storm(which, kc, args, workdir)
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            result["logs"] = str(workdir)
    result["checks"] = checks(result, args)
    return result


def main() -> None:
    parser = arguments()
    args = parser.parse_args()
    try:
        replicas_per_deployment(args.pods, args.deployments)
    except ValueError as exc:
        parser.error(str(exc))
    if not {"operator", "baseline"} & set(args.only.split(",")):
        parser.error("--only: name operator, baseline or both")
    result = {"machine": machine(), **bench_storm(args)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
