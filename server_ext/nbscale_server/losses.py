"""Whose fault a lost worker is: a pure decision, from what the launcher and the worker's
register say.

A worker that dies while running inputs is either the user's loss (its input crashed it or
ran out of memory: the attempt counts against the function's ``retries``) or the
infrastructure's (something outside the user's code took the worker away: the attempt is
free, retried at once, and only ``MAX_INFRASTRUCTURE_LOSSES`` such losses in a row fail the
input). The rules, in order:

1. the launcher knows: out of memory is the user's; a container removed by someone else, an
   engine that stopped answering, a job preempted or cancelled by a scheduler are the
   infrastructure's;
2. the control plane killed the worker itself (it outstayed a stop, or went silent with no
   input running) while inputs were still on it: the infrastructure's (an input that ran
   past its timeout is settled as a timeout before the kill);
3. a signal the worker's own code sent to its own process (``os.kill(os.getpid(), 9)``; the
   worker's audit hook records it in the register before it is sent) is the user's;
4. a fault signal (SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL, SIGSYS, SIGTRAP) comes from the
   code that ran: the user's; any other signal (SIGKILL, SIGTERM, ...) came from outside
   nbscale (an operator, the host's OOM killer on a process worker without a memory limit,
   a system shutting down): the infrastructure's;
5. an exit with a code (``os._exit(1)``, an interpreter crash) is the user's.

Launch failures are judged here too: a worker refused by its launcher, or one that exits
with a code before it registers (an import error, a missing interpreter), will fail the same
way again (deterministic); one killed by a signal from outside before it registers was
unlucky (transient), and is retried with backoff for longer.
"""

from __future__ import annotations

import signal

USER = "user"
INFRASTRUCTURE = "infrastructure"

# Losses to the infrastructure in a row after which an input fails (WorkerLostError).
MAX_INFRASTRUCTURE_LOSSES = 3

FAULT_SIGNALS = frozenset(
    s.value
    for s in (
        signal.SIGSEGV,
        signal.SIGBUS,
        signal.SIGABRT,
        signal.SIGFPE,
        signal.SIGILL,
        signal.SIGSYS,
        signal.SIGTRAP,
    )
)


def cause_of_loss(
    launcher_cause: str | None,
    killed_by_us: bool,
    exit_signal: int | None,
    self_signal: int,
) -> str:
    """``USER`` or ``INFRASTRUCTURE``: whose fault the loss of the inputs running on a dead
    worker is (see the module's rules). ``exit_signal``: the signal that ended it, if one did;
    ``self_signal``: a deadly signal its own code sent itself (0: none)."""
    if launcher_cause is not None:
        return launcher_cause
    if killed_by_us:
        return INFRASTRUCTURE
    if exit_signal is None or self_signal or exit_signal in FAULT_SIGNALS:
        return USER
    return INFRASTRUCTURE


def launch_failure_is_transient(
    launcher_cause: str | None, killed_by_us: bool, exit_signal: int | None
) -> bool:
    """Whether a worker that died before registering may well start next time: killed by a
    signal from outside, or lost to the infrastructure. Refused by the launcher, killed by us
    for not registering in time, out of memory, or exited with a code: it will not."""
    if launcher_cause is not None:
        return launcher_cause == INFRASTRUCTURE
    return not killed_by_us and exit_signal is not None and exit_signal not in FAULT_SIGNALS


def describe_cause(cause: str, losses: int, yielded: bool = False) -> str:
    """The sentence a ``WorkerLostError`` adds about whose loss it was (``yielded``: a
    generator that had yielded values, which is never retried)."""
    if yielded:
        whose = "lost to the infrastructure" if cause == INFRASTRUCTURE else "its own loss"
        return (
            f"{whose}; a generator is not retried once it has yielded values: they already "
            "reached the caller, and a retry would yield them again"
        )
    if cause == USER:
        return "counted against the function's retries"
    return (
        f"lost to the infrastructure {losses} time(s) in a row, not counted against the "
        "function's retries"
    )
