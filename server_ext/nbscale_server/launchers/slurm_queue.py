"""What Slurm says about worker jobs, read: ``squeue`` and ``scontrol show job`` output,
and what a job's end means for nbscale. Pure: no Slurm command runs here.

A job is *pending* while Slurm holds it in the queue (with its reason: ``Resources``,
``Priority``, ``QOSMaxJobsPerUserLimit``...), *running* once its batch step has started,
and *exited* in a final state. The final state says whose doing the end was
(``losses.USER``/``INFRASTRUCTURE``, the control plane's one notion of blame): cancelled by
someone else (an admin, ``scancel`` by hand), preempted, past its walltime, its node lost or
never booted are losses of the infrastructure, not failures of the user's function; out of
memory, or a worker that exited with an error code, are the user's. A job that failed by a
signal is judged by the signal, as a local process is (``losses.cause_of_loss``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..losses import INFRASTRUCTURE, USER
from .base import EXIT_LOST, WorkerPhase

# squeue's fields, "|"-separated: job id, state, reason, comment (last: it is free text).
SQUEUE_FORMAT = "%i|%T|%r|%k"

_PENDING = {
    "PENDING",
    "CONFIGURING",
    "REQUEUED",
    "REQUEUE_FED",
    "REQUEUE_HOLD",
    "RESV_DEL_HOLD",
    "SUSPENDED",  # holds its node but runs nothing: not serving
}
FINAL = {
    "BOOT_FAIL",
    "CANCELLED",
    "COMPLETED",
    "DEADLINE",
    "FAILED",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "REVOKED",
    "SPECIAL_EXIT",
    "TIMEOUT",
}
# Ends caused by the cluster rather than the worker's code (CANCELLED: when not ours).
_INFRASTRUCTURE = {"BOOT_FAIL", "DEADLINE", "NODE_FAIL", "PREEMPTED", "REVOKED", "TIMEOUT"}
_SAYS = {
    "BOOT_FAIL": "could not start: its node failed to boot",
    "CANCELLED": "was cancelled in Slurm",
    "DEADLINE": "passed its deadline in Slurm",
    "FAILED": "failed",
    "NODE_FAIL": "lost its node",
    "OUT_OF_MEMORY": "ran out of memory and was killed by Slurm",
    "PREEMPTED": "was preempted by Slurm",
    "REVOKED": "was revoked by Slurm",
    "TIMEOUT": "reached its walltime",
}
_FIELD = re.compile(r"(?:^|\s)(JobState|Reason|ExitCode)=(\S*)")


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """One row of ``squeue``."""

    job_id: str
    state: str  # PENDING, RUNNING, COMPLETED, ...
    reason: str | None  # None where Slurm says "None"
    comment: str

    @property
    def phase(self) -> WorkerPhase:
        return phase_of(self.state)


def phase_of(state: str) -> WorkerPhase:
    base = state.split()[0].rstrip("+") if state else ""
    if base in FINAL:
        return "exited"
    return "pending" if base in _PENDING else "running"


def parse_squeue(text: str) -> dict[str, QueueEntry]:
    """``squeue -h -o SQUEUE_FORMAT`` output, by job id."""
    entries = {}
    for line in text.splitlines():
        parts = line.strip().split("|", 3)
        if len(parts) != 4 or not parts[0]:
            continue
        job_id, state, reason, comment = parts
        entries[job_id] = QueueEntry(job_id, state, _none(reason), comment)
    return entries


def parse_scontrol_job(text: str) -> dict[str, str]:
    """JobState, Reason and ExitCode from ``scontrol show job -o <id>``."""
    return dict(_FIELD.findall(text))


@dataclass(frozen=True, slots=True)
class JobEnd:
    """How a worker's job ended, in nbscale's terms."""

    code: int  # the worker's exit code; -N when a signal N ended it
    reason: str | None  # what the code does not say, phrased to follow "worker wk-..."
    # whose doing the end was (``losses.USER``/``INFRASTRUCTURE``); None: judge by the signal
    # (or it was this control plane's own cancel)
    cause: str | None = None


def job_end(job_id: str, state: str, exit_code: str, reason: str | None, ours: bool) -> JobEnd:
    """The end of job ``job_id`` from Slurm's ``State``, ``ExitCode`` ("code:signal") and
    ``Reason``; ``ours``: whether this control plane cancelled it."""
    base = state.split()[0].rstrip("+") if state else "UNKNOWN"
    code_text, _, signal_text = (exit_code or "0:0").partition(":")
    code = _int(code_text)
    signal = _int(signal_text)
    worker_code = -signal if signal else code
    if base == "COMPLETED":
        return JobEnd(worker_code, None)
    if base == "CANCELLED" and ours:
        return JobEnd(worker_code or -15, None)
    says = _SAYS.get(base, f"ended in Slurm state {base}")
    details = f"Slurm job {job_id}: State={base} ExitCode={exit_code or '?'}"
    if _none(reason or "None"):
        details += f" Reason={reason}"
    cause = _cause(base, signal)
    if not worker_code:  # the worker may have exited cleanly on Slurm's signal: not a success
        worker_code = -15 if cause == INFRASTRUCTURE else 1
    return JobEnd(worker_code, f"{says} ({details})", cause)


def _cause(base: str, signal: int) -> str | None:
    """Whose doing a job's end was, from its final state (not one this control plane
    cancelled, nor a completion)."""
    if base in _INFRASTRUCTURE or base == "CANCELLED":
        return INFRASTRUCTURE
    if base == "OUT_OF_MEMORY" or (base == "FAILED" and not signal):
        return USER
    return None  # a signal, or a state that says nothing of it: judged by the signal


def lost(job_id: str) -> JobEnd:
    """The end of a job Slurm no longer knows (purged, or its controller's state lost)."""
    return JobEnd(
        EXIT_LOST, f"left Slurm's records without a trace (Slurm job {job_id})", INFRASTRUCTURE
    )


def _none(text: str) -> str | None:
    text = text.strip()
    return None if text in ("", "None", "(null)") else text


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0


def slurm_error(stderr: str) -> str:
    """A Slurm command's error lines, without the tool's "sbatch: error: " prefixes."""
    lines = [line.split("error: ", 1)[-1].strip() for line in stderr.splitlines() if line.strip()]
    return "; ".join(lines) or "no error message"
