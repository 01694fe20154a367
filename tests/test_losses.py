"""Whose fault a lost worker is (``losses.py``): pure rules, plain values."""

from __future__ import annotations

import signal

import pytest

from nbscale_server.losses import (
    INFRASTRUCTURE,
    USER,
    cause_of_loss,
    launch_failure_is_transient,
)

KILL, TERM, SEGV = signal.SIGKILL.value, signal.SIGTERM.value, signal.SIGSEGV.value


@pytest.mark.parametrize(
    ("launcher_cause", "killed_by_us", "exit_signal", "self_signal", "cause"),
    [
        (USER, False, KILL, 0, USER),  # Docker says: out of memory
        (INFRASTRUCTURE, False, None, 0, INFRASTRUCTURE),  # removed by someone else
        (None, True, KILL, 0, INFRASTRUCTURE),  # we killed it (it outstayed a stop)
        (None, False, KILL, KILL, USER),  # os.kill(os.getpid(), 9) in the input
        (None, False, KILL, 0, INFRASTRUCTURE),  # kill -9 from outside
        (None, False, TERM, 0, INFRASTRUCTURE),
        (None, False, SEGV, 0, USER),  # a C extension crashed
        (None, False, None, 0, USER),  # os._exit(1), or the interpreter died
    ],
)
def test_cause_of_loss(launcher_cause, killed_by_us, exit_signal, self_signal, cause):
    assert cause_of_loss(launcher_cause, killed_by_us, exit_signal, self_signal) == cause


@pytest.mark.parametrize(
    ("launcher_cause", "killed_by_us", "exit_signal", "transient"),
    [
        (None, False, KILL, True),  # killed from outside before it registered
        (INFRASTRUCTURE, False, None, True),
        (None, True, KILL, False),  # we killed it: it did not register in time
        (None, False, None, False),  # exited with a code: an import error, say
        (USER, False, KILL, False),  # too little memory to start
        (None, False, SEGV, False),
    ],
)
def test_launch_failure_is_transient(launcher_cause, killed_by_us, exit_signal, transient):
    assert launch_failure_is_transient(launcher_cause, killed_by_us, exit_signal) is transient
