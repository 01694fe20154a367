"""What a worker Pod's status means for nbscale: pure functions of the Pod (as the API's JSON
dict), no I/O.

- Pending and unschedulable (``PodScheduled`` False, ``Unschedulable``: the scheduler's
  ``FailedScheduling``) is *waiting for resources*, with the scheduler's message; a
  cluster autoscaler may add a node, so it is no failure until ``pending_timeout``.
- Pending and scheduled (pulling the image, mounting the Secret) or Running: started.
- Failed or Succeeded: exited, with the container's exit code and, for ``OOMKilled``, the
  memory limit in the reason. An image that cannot be pulled or a container that cannot be
  created ends the worker at once (it would wait forever).
- Whose loss an end is (:attr:`PodEnd.cause`, for ``losses.py``): out of memory is the
  user's; evictions, node losses and Pods deleted by someone else are the infrastructure's;
  otherwise the exit code and its signal decide.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..losses import INFRASTRUCTURE, USER
from .base import EXIT_LOST, EXIT_NOT_STARTED, WorkerPhase

_CANNOT_START = {
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
}
# Why the infrastructure, not the worker, ended a Pod (status.reason, or a condition's).
_INFRASTRUCTURE = {
    "Evicted",
    "Preempting",
    "NodeLost",
    "NodeShutdown",
    "Shutdown",
    "Terminated",
    "UnexpectedAdmissionError",
    "DeletionByTaintManager",
    "DeletionByPodGC",
    "TerminationByKubelet",
    "PreemptionByScheduler",
    "EvictionByEvictionAPI",
}


@dataclass(frozen=True, slots=True)
class PodEnd:
    code: int
    reason: str | None  # beyond the exit code, phrased to follow "worker wk-..."
    cause: str | None = None  # losses.USER or INFRASTRUCTURE when the Pod says; None: judge

    @property
    def infrastructure(self) -> bool:
        return self.cause == INFRASTRUCTURE


@dataclass(frozen=True, slots=True)
class PodView:
    phase: WorkerPhase
    reason: str | None = None  # why it waits (the scheduler's message)
    end: PodEnd | None = None


def _container_state(pod: dict[str, Any]) -> dict[str, Any]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return (statuses[0].get("state") or {}) if statuses else {}


def _condition(pod: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            return dict(c)
    return None


def memory_limit(pod: dict[str, Any]) -> str | None:
    containers = (pod.get("spec") or {}).get("containers") or [{}]
    return ((containers[0].get("resources") or {}).get("limits") or {}).get("memory")


def infrastructure_reason(pod: dict[str, Any]) -> str | None:
    """The infrastructure's word for ending the Pod, if it did."""
    status = pod.get("status") or {}
    if status.get("reason") in _INFRASTRUCTURE:
        return str(status["reason"])
    target = _condition(pod, "DisruptionTarget")
    if target is not None and target.get("status") == "True":
        return str(target.get("reason") or "DisruptionTarget")
    return None


def view(pod: dict[str, Any]) -> PodView:
    """Where the worker of ``pod`` is."""
    status = pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    state = _container_state(pod)
    if phase in ("Failed", "Succeeded") or "terminated" in state:
        return PodView("exited", end=ended(pod))
    waiting = state.get("waiting") or {}
    if waiting.get("reason") in _CANNOT_START:
        image = ((pod.get("spec") or {}).get("containers") or [{}])[0].get("image")
        said = waiting.get("message") or waiting["reason"]
        return PodView(
            "exited",
            end=PodEnd(
                EXIT_NOT_STARTED, f"could not start ({waiting['reason']}: {said}; image {image})"
            ),
        )
    if phase == "Pending":
        scheduled = _condition(pod, "PodScheduled")
        if scheduled is None or scheduled.get("status") != "True":
            reason = None
            if scheduled is not None and scheduled.get("reason") == "Unschedulable":
                reason = scheduled.get("message") or "Unschedulable"
            return PodView("pending", reason)
    return PodView("running")


def ended(pod: dict[str, Any]) -> PodEnd:
    """How an exited Pod's worker ended: its code and what the code alone does not say."""
    terminated = _container_state(pod).get("terminated")
    infrastructure = infrastructure_reason(pod)
    message = (pod.get("status") or {}).get("message")
    if terminated is None:
        if infrastructure is not None:
            said = f": {message}" if message else ""
            return PodEnd(EXIT_LOST, f"was lost ({infrastructure}{said})", INFRASTRUCTURE)
        return PodEnd(EXIT_LOST, "ended without an exit status")
    code = int(terminated.get("exitCode", EXIT_LOST))
    if terminated.get("reason") == "OOMKilled":
        limit = memory_limit(pod)
        within = f" (memory limit {limit})" if limit else ""
        return PodEnd(code, f"ran out of memory{within} and was killed (exit code {code})", USER)
    if infrastructure is not None:
        said = f": {message}" if message else ""
        return PodEnd(code, f"was ended by Kubernetes ({infrastructure}{said})", INFRASTRUCTURE)
    return PodEnd(code, None)


def vanished(pod: dict[str, Any] | None, deleted_by_us: bool) -> PodEnd:
    """A Pod that is gone (deleted) before we saw it end."""
    if pod is not None and "terminated" in _container_state(pod):
        end = ended(pod)
        if deleted_by_us or end.infrastructure:
            return end
        return PodEnd(
            end.code,
            end.reason or f"was deleted by someone else (exit code {end.code})",
            INFRASTRUCTURE,
        )
    if deleted_by_us:
        return PodEnd(-15, "was deleted by the control plane")
    return PodEnd(EXIT_LOST, "was deleted by someone else (its Pod is gone)", INFRASTRUCTURE)


def quota_message(status: int, body: str) -> str | None:
    """The clear words for an API refusal that is a namespace's quota, else None."""
    if status == 403 and "exceeded quota" in body:
        start = body.find("exceeded quota")
        detail = body[start:].split('"')[0].rstrip(".,} ")
        return (
            f"the namespace's ResourceQuota refuses another worker Pod ({detail}): lower "
            "max_containers or ask for a larger quota"
        )
    return None
