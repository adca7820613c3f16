"""Approvals cannot be redirected, forged or self-granted; the approver is recorded.

On the real API server with the real kubectl (`--as` impersonation) and, for the end-to-end
test, the real operator process under its deploy/rbac.yaml ServiceAccount:

* the CRD's CEL rules keep `spec` immutable apart from the verdict, which is given once;
* deploy/approval-policy.yaml (a ValidatingAdmissionPolicy) makes `spec.approvedBy` the
  requesting user's own name and refuses the operator's ServiceAccount;
* deploy/approver-roles.yaml aggregates approving into `edit` and reading into `view`;
* the operator executes exactly what it decided, in the decision's own namespace, refuses a
  decision whose spec differs from `status.actionDigest` (as if an old CRD had let it be
  rewritten), and names the approver in `status.reviewedBy`;
* `sre-agent approve` fills in approvedBy from the API server's SelfSubjectReview.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from sre_agent.adapters.kube.client import KubeClient
from sre_agent.adapters.kube.decisions import (
    API_VERSION,
    PLURAL,
    DecisionStore,
    Phase,
    RecordedDecision,
    action_digest,
    manifest_for,
)
from sre_agent.domain import ProposedAction
from tests.cluster import kubesim
from tests.cluster.conftest import REPO, Cluster
from tests.cluster.operator_harness import (
    OperatorProcess,
    agent_kubeconfig,
    create_deployment,
    decision,
    phase_of,
    token_kubeconfig,
)
from tests.cluster.test_decisions import Clock, decision_in

pytestmark = pytest.mark.cluster

WAIT = 90
ROLES = REPO / "deploy" / "approver-roles.yaml"
POLICY = REPO / "deploy" / "approval-policy.yaml"
OPERATOR_SA = "system:serviceaccount:sre-agent:sre-agent"
SA_GROUPS = ("system:serviceaccounts", "system:serviceaccounts:sre-agent", "system:authenticated")
FROZEN = "cannot change once the decision is made"
ADMIN = "admin"  # the test kubeconfig's own user (a system:masters certificate)


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def approval_policy(cluster: Cluster) -> Iterator[None]:
    """deploy/'s approver roles, admission policy and operator RBAC; the policy is removed afterwards."""
    cluster.run_kubectl("create", "namespace", "sre-agent", check=False)
    cluster.run_kubectl(
        "apply", "-f", str(REPO / "deploy" / "rbac.yaml"), "-f", str(ROLES), "-f", str(POLICY)
    )
    yield
    cluster.run_kubectl("delete", "--ignore-not-found", "-f", str(POLICY))


@pytest.fixture
def other_namespace(cluster: Cluster) -> Iterator[str]:
    """A second namespace (y) next to the test's own (x)."""
    name = f"t-other-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(cluster.api_client)
    core.create_namespace({"metadata": {"name": name}}, _preload_content=False)
    yield name
    core.delete_namespace(name, propagation_policy="Background", _preload_content=False)


@pytest.fixture
async def kube(cluster: Cluster) -> AsyncIterator[KubeClient]:
    k = KubeClient.from_kubeconfig(str(cluster.kubeconfig))
    yield k
    k.close()


def as_user(
    cluster: Cluster, user: str, *args: str, groups: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """kubectl impersonating `user` (admin may impersonate anyone); `ADMIN`: as admin itself."""
    impersonate = [f"--as={user}", *(f"--as-group={g}" for g in groups)] if user != ADMIN else []
    return cluster.run_kubectl(*impersonate, *args, check=False)


def patch_as(
    cluster: Cluster, user: str, namespace: str, name: str, spec: dict[str, Any], *extra: str, **kw: Any
) -> subprocess.CompletedProcess[str]:
    body = json.dumps({"spec": spec})
    return as_user(
        cluster,
        user,
        "patch",
        "agentdecision",
        name,
        "-n",
        namespace,
        "--type=merge",
        "-p",
        body,
        *extra,
        **kw,
    )


def grant(cluster: Cluster, namespace: str, role: str, *, user: str = "", sa: str = "") -> None:
    subject = f"--user={user}" if user else f"--serviceaccount={namespace}:{sa}"
    cluster.run_kubectl(
        "create",
        "rolebinding",
        f"{user or sa}-{role}"[:63],
        f"--clusterrole={role}",
        subject,
        "-n",
        namespace,
    )


def wait_until_enforced(cluster: Cluster, namespace: str, name: str) -> None:
    """The admission policy acts a moment after it is created: wait until a forged approval fails."""

    def refused() -> bool:
        result = patch_as(
            cluster, ADMIN, namespace, name, {"approved": True, "approvedBy": "x"}, "--dry-run=server"
        )
        return "ValidatingAdmissionPolicy" in result.stderr

    kubesim.wait_for(refused, timeout=60, what="the approval admission policy to be enforced")


async def record(
    kube: KubeClient, namespace: str, *, owner: str = "web", replicas: int = 4, fingerprint: str = "0" * 16
) -> RecordedDecision:
    """A pending scale_deployment decision recorded exactly as the operator records one."""
    clock = Clock()
    d = decision_in(
        namespace,
        clock,
        owner=owner,
        action=ProposedAction("scale_deployment", {"replicas": replicas}),
        replicas=2,
        fingerprint=fingerprint,
    )
    rec, created = await DecisionStore(kube, clock).record(
        d, phase=Phase.PENDING_APPROVAL, message="needs approval", expires_at=clock.now().replace(year=2099)
    )
    assert created
    return rec


def replicas_of(cluster: Cluster, namespace: str, name: str) -> int:
    dep = client.AppsV1Api(cluster.api_client).read_namespaced_deployment(name, namespace)
    return int(dep.spec.replicas)


def wait_phase(cluster: Cluster, namespace: str, name: str, phase: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        obj = decision(cluster.api_client, namespace, name)
        return obj if phase_of(obj) == phase else None

    try:
        found: dict[str, Any] = kubesim.wait_for(reached, timeout=WAIT, what=f"{name} to be {phase}")
    except TimeoutError:
        obj = decision(cluster.api_client, namespace, name)
        raise AssertionError(f"{name} is {phase_of(obj)}: {obj.get('status')}") from None
    return found


# ---------------------------------------------------------------- CEL: spec is frozen


async def test_a_namespace_approver_cannot_rewrite_what_was_decided(
    cluster: Cluster, approval_policy: None, namespace: str, other_namespace: str, kube: KubeClient
) -> None:
    x, y = namespace, other_namespace
    rec = await record(kube, x)
    theirs = await record(kube, y)
    grant(cluster, x, "sre-agent-decision-approver", user="mallory")

    attacks: list[dict[str, Any]] = [
        {"target": {"namespace": y}},
        {"target": {"name": "victim-0"}},
        {"owner": {"name": "victim"}},
        {"owner": None},
        {"action": "restart_pod"},
        {"parameters": {"replicas": 12}},
        {"parameters": {"namespace": y}},
        {"node": "another-node"},
        {"confidence": 1},
        {"diagnosis": "all fine"},
    ]
    for spec in attacks:
        result = patch_as(cluster, "mallory", x, rec.name, spec)
        assert result.returncode != 0 and FROZEN in result.stderr, (spec, result.stderr)
        # Not even together with a (valid) approval.
        result = patch_as(
            cluster, "mallory", x, rec.name, {**spec, "approved": True, "approvedBy": "mallory"}
        )
        assert result.returncode != 0 and FROZEN in result.stderr, (spec, result.stderr)

    # No rights at all in y, and none on .status (where the operator keeps actionDigest) in x.
    in_y = patch_as(cluster, "mallory", y, theirs.name, {"approved": True, "approvedBy": "mallory"})
    assert in_y.returncode != 0 and "forbidden" in in_y.stderr, in_y.stderr
    status = as_user(
        cluster, "mallory", "patch", "agentdecision", rec.name, "-n", x, "--subresource=status",
        "--type=merge", "-p", '{"status":{"actionDigest":"sha256:0"}}',
    )  # fmt: skip
    assert status.returncode != 0 and "forbidden" in status.stderr, status.stderr

    fresh = RecordedDecision.from_object(decision(cluster.api_client, x, rec.name))
    assert fresh.target.namespace == x and fresh.action.parameters == {"replicas": 4}
    assert fresh.recorded_digest == action_digest(fresh.request())


# ---------------------------------------------------------------- admission: the approver is real


async def test_approved_by_must_be_the_requesting_user_and_never_the_operator(
    cluster: Cluster, approval_policy: None, namespace: str, kube: KubeClient
) -> None:
    rec = await record(kube, namespace)
    grant(cluster, namespace, "sre-agent-decision-approver", user="mallory")
    wait_until_enforced(cluster, namespace, rec.name)

    # Without approvedBy the CRD refuses; naming someone else the admission policy refuses.
    bare = patch_as(cluster, "mallory", namespace, rec.name, {"approved": True})
    assert bare.returncode != 0 and "spec.approvedBy must name the user" in bare.stderr, bare.stderr
    forged = patch_as(cluster, "mallory", namespace, rec.name, {"approved": True, "approvedBy": "alice"})
    assert forged.returncode != 0, forged.stderr
    assert "spec.approvedBy must be your own user name, mallory" in forged.stderr

    # The operator's own ServiceAccount may patch decisions (kopf needs it), but never approve one.
    assert as_user(
        cluster, OPERATOR_SA, "auth", "can-i", "patch", "agentdecisions.sre.agentops.dev", "-n", namespace,
        groups=SA_GROUPS,
    ).stdout.strip() == "yes"  # fmt: skip
    for verdict in (True, False):
        own = patch_as(
            cluster, OPERATOR_SA, namespace, rec.name, {"approved": verdict, "approvedBy": OPERATOR_SA},
            groups=SA_GROUPS,
        )  # fmt: skip
        assert own.returncode != 0 and "ServiceAccount cannot approve" in own.stderr, own.stderr

    ok = patch_as(cluster, "mallory", namespace, rec.name, {"approved": True, "approvedBy": "mallory"})
    assert ok.returncode == 0, ok.stderr
    spec = decision(cluster.api_client, namespace, rec.name)["spec"]
    assert (spec["approved"], spec["approvedBy"]) == (True, "mallory")

    # Given once: not flipped to a rejection, not re-attributed, not even by an admin.
    for change in ({"approved": False, "approvedBy": "mallory"}, {"approvedBy": "admin"}):
        for user in ("mallory", ADMIN):
            again = patch_as(cluster, user, namespace, rec.name, change)
            assert again.returncode != 0 and "cannot change once the decision is approved" in again.stderr


async def test_approver_and_viewer_roles_aggregate_into_edit_and_view(
    cluster: Cluster, approval_policy: None, namespace: str, kube: KubeClient
) -> None:
    rec = await record(kube, namespace)
    grant(cluster, namespace, "edit", user="erin")
    grant(cluster, namespace, "view", user="victor")
    wait_until_enforced(cluster, namespace, rec.name)

    def can(user: str, verb: str) -> bool:
        out = as_user(
            cluster, user, "auth", "can-i", verb, "agentdecisions.sre.agentops.dev", "-n", namespace
        )
        return out.stdout.strip() == "yes"

    # kube-controller-manager folds the labelled ClusterRoles into edit and view.
    kubesim.wait_for(lambda: can("erin", "patch") and can("victor", "list"), timeout=60, what="aggregation")
    assert not can("victor", "patch") and not can("erin", "delete")

    listed = as_user(cluster, "victor", "get", "agentdecisions", "-n", namespace, "-o", "name")
    assert listed.returncode == 0 and rec.name in listed.stdout
    denied = patch_as(cluster, "victor", namespace, rec.name, {"approved": False, "approvedBy": "victor"})
    assert denied.returncode != 0 and "forbidden" in denied.stderr
    ok = patch_as(cluster, "erin", namespace, rec.name, {"approved": False, "approvedBy": "erin"})
    assert ok.returncode == 0, ok.stderr


# ---------------------------------------------------------------- end to end: the operator


def _cli(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SRE_AGENT_")}
    env.update(KUBECONFIG=str(kubeconfig), NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    return subprocess.run(
        [sys.executable, "-m", "sre_agent.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def _tampered(
    kube: KubeClient, namespace: str, name: str, change: dict[str, Any], *, digest: bool = True
) -> str:
    """A decision whose spec differs from what was decided (as an old CRD without the CEL rules would
    have let an approver make it), pending, approved by admin; its name."""
    clock = Clock()
    decided = decision_in(
        namespace,
        clock,
        action=ProposedAction("scale_deployment", {"replicas": 4}),
        replicas=2,
        fingerprint=name,
    )
    manifest = manifest_for(decided, expires_at=clock.now().replace(year=2099))
    manifest["metadata"]["name"] = name
    digest_of_decided = action_digest(RecordedDecision.from_object(manifest).request())
    rewritten = copy.deepcopy(manifest)
    for key, value in change.items():
        if isinstance(value, dict):
            rewritten["spec"][key].update(value)
        else:
            rewritten["spec"][key] = value
    await kube.create(API_VERSION, PLURAL, namespace, rewritten)
    status: dict[str, Any] = {"phase": "PendingApproval"}
    if digest:
        status["actionDigest"] = digest_of_decided
    await kube.patch(API_VERSION, PLURAL, namespace, name, {"status": status}, subresource="status")
    await kube.patch(
        API_VERSION, PLURAL, namespace, name, {"spec": {"approved": True, "approvedBy": "admin"}}
    )
    return name


async def test_operator_runs_only_what_was_decided_where_it_was_decided_and_names_the_approver(
    cluster: Cluster,
    approval_policy: None,
    namespace: str,
    other_namespace: str,
    kube: KubeClient,
    tmp_path: Path,
) -> None:
    x, y = namespace, other_namespace
    api = cluster.api_client
    for ns, name in ((x, "web"), (x, "api"), (y, "victim")):
        create_deployment(api, ns, name, 2)

    # An approver in x only, as a real identity with its own token: a ServiceAccount of x.
    core = client.CoreV1Api(api)
    core.create_namespaced_service_account(x, {"metadata": {"name": "alice"}}, _preload_content=False)
    grant(cluster, x, "sre-agent-decision-approver", sa="alice")
    token = json.loads(
        core.create_namespaced_service_account_token(
            "alice", x, {"spec": {"expirationSeconds": 3600}}, _preload_content=False
        ).data
    )["status"]["token"]
    alice = token_kubeconfig(cluster, token, tmp_path / "alice.kubeconfig")
    alice_name = f"system:serviceaccount:{x}:alice"

    honest = await record(kube, x)
    wait_until_enforced(cluster, x, honest.name)
    moved = await _tampered(kube, x, "moved", {"target": {"namespace": y}, "owner": {"name": "victim"}})
    bigger = await _tampered(kube, x, "bigger", {"owner": {"name": "api"}, "parameters": {"replicas": 12}})
    unpinned = await _tampered(kube, x, "unpinned", {"owner": {"name": "api"}}, digest=False)

    sa_config = agent_kubeconfig(cluster, tmp_path / "agent.kubeconfig")
    with OperatorProcess(
        sa_config, tmp_path / "operator.log", args=("--standalone", "-n", x, "-n", y)
    ) as operator:
        try:
            approved = _cli(alice, "approve", honest.name, "-n", x)
            assert approved.returncode == 0, approved.stderr
            assert approved.stdout.strip() == f"agentdecision {x}/{honest.name} approved by {alice_name}"
            done = wait_phase(cluster, x, honest.name, "Executed")
            failed = {name: wait_phase(cluster, x, name, "Failed") for name in (moved, bigger, unpinned)}
        finally:
            print(f"----- operator log -----\n{operator.log()[-20000:]}")

    assert done["spec"]["approvedBy"] == alice_name
    assert done["status"]["reviewedBy"] == alice_name and done["status"]["reviewedAt"]
    assert replicas_of(cluster, x, "web") == 4

    assert "not the decision's namespace" in failed[moved]["status"]["message"]
    assert "changed after it was made" in failed[bigger]["status"]["message"]
    assert "no status.actionDigest" in failed[unpinned]["status"]["message"]
    assert failed[moved]["status"]["reviewedBy"] == "admin"
    assert replicas_of(cluster, y, "victim") == 2
    assert replicas_of(cluster, x, "api") == 2

    # The CLI's one-line answers: already decided, not found, forbidden elsewhere.
    again = _cli(alice, "reject", honest.name, "-n", x, "--reason", "too late")
    assert again.returncode == 1
    assert (
        again.stderr.strip()
        == f"sre-agent: agentdecision {x}/{honest.name} is already approved by {alice_name}"
    )
    missing = _cli(alice, "approve", "no-such-decision", "-n", x)
    assert missing.stderr.strip() == f"sre-agent: agentdecision {x}/no-such-decision not found"
    theirs = await record(kube, y, owner="victim")
    elsewhere = _cli(alice, "approve", theirs.name, "-n", y)
    assert elsewhere.returncode == 1 and elsewhere.stderr.startswith(f"sre-agent: agentdecision {y}/")
    assert "forbidden" in elsewhere.stderr and len(elsewhere.stderr.strip().splitlines()) == 1
