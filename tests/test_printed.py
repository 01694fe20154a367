"""What an input prints reaches its caller as a user expects, on real worker processes:
stderr on stderr, the output of every retried attempt with its attempt number; and Modal's
``wrap_returned_exceptions`` keyword accepted."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

import nbscale

app = nbscale.App("test-printed")


@app.function(max_containers=1, scaledown_window=5)
def warns(x: int) -> int:
    print(f"out {x}")
    print(f"careful with {x}", file=sys.stderr)
    return x


@app.function(
    max_containers=1,
    scaledown_window=5,
    retries=nbscale.Retries(max_retries=2, initial_delay=0.0),
)
def flaky(counter: str) -> None:
    n = int(Path(counter).read_text()) + 1 if os.path.exists(counter) else 1
    Path(counter).write_text(str(n))
    print(f"attempt {n}")
    raise RuntimeError(f"attempt {n} failed")


@app.function(max_containers=1, scaledown_window=5)
def fails_on_odd(x: int) -> int:
    if x % 2:
        raise ValueError(f"odd {x}")
    return x


def test_remote_stderr_reaches_the_callers_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    assert warns.remote(1) == 1
    printed = capsys.readouterr()
    assert "careful with 1" in printed.err and "careful with 1" not in printed.out
    assert "out 1" in printed.out and "out 1" not in printed.err
    assert list(warns.map([2])) == [2]
    printed = capsys.readouterr()
    assert "[0] careful with 2" in printed.err and "[0] out 2" in printed.out


def test_every_attempts_output_is_kept_with_its_number(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(RuntimeError, match="attempt 3 failed"):
        flaky.remote(str(tmp_path / "counter"))
    out = capsys.readouterr().out
    assert out.splitlines() == [
        "[attempt 1] attempt 1",
        "[attempt 2] attempt 2",
        "[attempt 3] attempt 3",
    ]


def test_wrap_returned_exceptions_is_accepted() -> None:
    results = list(
        fails_on_odd.map(range(3), return_exceptions=True, wrap_returned_exceptions=False)
    )
    assert results[0] == 0 and results[2] == 2
    assert type(results[1]) is ValueError and str(results[1]) == "odd 1"  # bare, as Modal
    results = list(
        fails_on_odd.starmap([(1,)], return_exceptions=True, wrap_returned_exceptions=True)
    )
    assert type(results[0]) is ValueError
