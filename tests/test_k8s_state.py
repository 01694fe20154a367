"""What a worker Pod's status means (k8s_state.py): waiting for resources with the
scheduler's words, running, exited with exit code and OOM, infrastructure losses, and quota
refusals in clear words."""

from __future__ import annotations

from typing import Any

from nbscale_server.launchers.k8s_state import (
    EXIT_LOST,
    EXIT_NOT_STARTED,
    quota_message,
    vanished,
    view,
)
from nbscale_server.losses import USER

UNSCHEDULABLE = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."


def pod(phase: str, *, state: dict[str, Any] | None = None, **status: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"phase": phase, **status}
    if state is not None:
        body["containerStatuses"] = [{"name": "worker", "state": state}]
    return {
        "spec": {
            "containers": [{"image": "reg/img:1", "resources": {"limits": {"memory": "300Mi"}}}]
        },
        "status": body,
    }


def test_unschedulable_is_waiting_with_the_schedulers_message():
    condition = {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": UNSCHEDULABLE,
    }
    v = view(pod("Pending", conditions=[condition]))
    assert (v.phase, v.reason, v.end) == ("pending", UNSCHEDULABLE, None)


def test_not_yet_scheduled_is_waiting_without_a_reason_and_scheduled_is_running():
    assert view(pod("Pending")).phase == "pending"
    scheduled = [{"type": "PodScheduled", "status": "True"}]
    pulling = {"waiting": {"reason": "ContainerCreating"}}
    assert view(pod("Pending", conditions=scheduled, state=pulling)).phase == "running"
    assert view(pod("Running", state={"running": {}})).phase == "running"


def test_exit_code_and_oom_are_reported():
    v = view(pod("Failed", state={"terminated": {"exitCode": 3, "reason": "Error"}}))
    assert v.phase == "exited" and v.end is not None
    assert (v.end.code, v.end.reason, v.end.infrastructure) == (3, None, False)
    oom = view(pod("Failed", state={"terminated": {"exitCode": 137, "reason": "OOMKilled"}}))
    assert oom.end is not None and oom.end.code == 137
    assert oom.end.reason == "ran out of memory (memory limit 300Mi) and was killed (exit code 137)"
    assert oom.end.cause == USER  # counted against the function's retries


def test_evictions_and_node_losses_are_the_infrastructures():
    evicted = view(pod("Failed", reason="Evicted", message="The node was low on memory."))
    assert evicted.end is not None and evicted.end.infrastructure
    assert "Evicted: The node was low on memory." in (evicted.end.reason or "")
    target = {"type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager"}
    lost = view(pod("Failed", conditions=[target], state={"terminated": {"exitCode": 143}}))
    assert lost.end is not None and lost.end.infrastructure and lost.end.code == 143


def test_an_image_that_cannot_be_pulled_ends_the_worker_at_once():
    state = {"waiting": {"reason": "ErrImagePull", "message": "not found"}}
    v = view(pod("Pending", state=state))
    assert v.phase == "exited" and v.end is not None and v.end.code == EXIT_NOT_STARTED
    assert "ErrImagePull: not found" in (v.end.reason or "") and "reg/img:1" in (v.end.reason or "")


def test_a_pod_deleted_by_someone_else_is_an_infrastructure_loss():
    gone = vanished(None, deleted_by_us=False)
    assert gone.code == EXIT_LOST and gone.infrastructure
    assert "deleted by someone else" in (gone.reason or "")
    ours = vanished(None, deleted_by_us=True)
    assert not ours.infrastructure


def test_quota_refusals_are_said_clearly():
    body = (
        '{"kind":"Status","message":"pods \\"nbscale-wk-1\\" is forbidden: exceeded quota: '
        "compute, requested: limits.memory=2Gi, used: limits.memory=8Gi, limited: "
        'limits.memory=8Gi","reason":"Forbidden","code":403}'
    )
    message = quota_message(403, body)
    assert message is not None
    assert "ResourceQuota" in message and "exceeded quota: compute" in message
    assert quota_message(403, '{"message": "forbidden: RBAC"}') is None
