"""Who controls an object, as its own metadata says: the one ownerReference with controller: true.

Pure. Used wherever the code needs an object's controller: intake's owner key, rollout history
(which ReplicaSet a pod belongs to, which Deployment owns a ReplicaSet), evidence, the gatherer's
owner chain and the executor's restart check.
"""

from __future__ import annotations

from sre_agent.domain import JSON


def controller_ref(obj: JSON) -> JSON | None:
    """The ownerReference marked controller: true, if any."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller"):
            return ref
    return None
