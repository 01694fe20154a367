"""Errors come back as the user would see them locally, and bad input fails clearly."""

from __future__ import annotations

import linecache
import threading
import traceback

import pytest

import nbscale

app = nbscale.App("test-errors")


class BadValueError(ValueError):
    """A user exception type defined in the caller's code."""


class NeedsTwoArgs(Exception):
    def __init__(self, a, b):
        super().__init__(f"{a}-{b}")


@app.function(max_containers=2, scaledown_window=5)
def fails_on_two(x):
    if x == 2:
        raise Exception("ohno")
    return x


@app.function(max_containers=2, scaledown_window=5)
def raises_custom(x):
    raise BadValueError(f"bad {x}")


@app.function(max_containers=2, scaledown_window=5)
def raises_unrebuildable(x):
    raise NeedsTwoArgs(x, x + 1)


@app.function(max_containers=2, scaledown_window=5)
def identity(x):
    return x


@app.function(max_containers=2, scaledown_window=5)
def returns_lock(_):
    return threading.Lock()


@app.function(max_containers=1, scaledown_window=5)
def recurses(n):
    return recurses_locally(n)


def recurses_locally(n):
    return recurses_locally(n + 1)


def test_modal_return_exceptions_example_holds_exactly():
    results = list(fails_on_two.map(range(3), return_exceptions=True))
    assert results[:2] == [0, 1]
    assert type(results[2]) is Exception
    assert repr(results[2]) == "Exception('ohno')"


def test_remote_exception_is_reraised_as_its_own_type_with_remote_frames():
    with pytest.raises(BadValueError, match="bad 3") as info:
        raises_custom.remote(3)
    text = "".join(traceback.format_exception(info.value))
    assert "raises_custom" in text  # the remote frame of the user's function
    assert 'raise BadValueError(f"bad {x}")' in text  # with its source line
    assert "raised remotely in raises_custom on worker wk-" in text


# A notebook cell: code the worker gets by value (cloudpickle names its file
# "<dynamic-code>") and whose lines only the caller's line cache has, as IPython keeps them.
CELL = "<ipython-input-7-nbscale>"
CELL_SOURCE = """\
def cell_helper(values):
    ratios = [10 / v for v in values]
    return ratios


def from_a_cell(values):
    return cell_helper(values)
"""


def test_frames_of_code_from_a_notebook_cell_show_the_cell_lines():
    linecache.cache[CELL] = (len(CELL_SOURCE), None, CELL_SOURCE.splitlines(True), CELL)
    namespace = {"__name__": "a_notebook_cell"}  # not importable: pickled by value
    exec(compile(CELL_SOURCE, CELL, "exec"), namespace)
    from_a_cell = app.function(name="from_a_cell")(namespace["from_a_cell"])
    with pytest.raises(ZeroDivisionError) as info:
        from_a_cell.remote([5, 0])
    frames = traceback.extract_tb(info.value.__traceback__)
    remote = [(f.filename, f.lineno, f.name, f.line) for f in frames if f.filename == CELL]
    assert remote == [
        (CELL, 7, "from_a_cell", "return cell_helper(values)"),
        (CELL, 2, "cell_helper", "ratios = [10 / v for v in values]"),
        (CELL, 2, "<listcomp>", "ratios = [10 / v for v in values]"),
    ]


def test_a_remote_recursion_error_comes_back_with_its_outer_and_inner_frames():
    """Its thousand frames once overflowed the stack while being sent: the worker died and
    the caller got a WorkerLostError."""
    with pytest.raises(RecursionError) as info:
        recurses.remote(0)
    frames = traceback.extract_tb(info.value.__traceback__)
    names = [f.name for f in frames]
    assert "recurses" in names and names[-1] == "recurses_locally"
    assert frames[-1].line == "return recurses_locally(n + 1)"
    notes = info.value.__notes__
    assert any(n.endswith("remote frames left out of the traceback)") for n in notes), notes
    assert recurses_locally.__name__ in "".join(traceback.format_exception(info.value))


def test_map_raises_the_first_failure_and_stops():
    with pytest.raises(Exception, match="ohno"):
        list(fails_on_two.map(range(10)))


def test_unrebuildable_exception_becomes_remote_error_with_the_text():
    with pytest.raises(nbscale.RemoteError) as info:
        raises_unrebuildable.remote(1)
    assert "NeedsTwoArgs" in str(info.value)
    assert "1-2" in str(info.value)
    assert "raise NeedsTwoArgs" in info.value.remote_traceback


def test_unpicklable_closure_names_the_culprit():
    lock = threading.Lock()

    @app.function
    def uses_lock(x):
        with lock:
            return x

    with pytest.raises(nbscale.SerializationError, match="closure variable 'lock'"):
        uses_lock.remote(1)


def test_unpicklable_argument_names_the_argument_and_input():
    with pytest.raises(nbscale.SerializationError, match="argument 0 of input 0"):
        identity.remote(x for x in range(3))
    with pytest.raises(nbscale.SerializationError, match="argument 0 of input 2"):
        list(identity.map([1, 2, threading.Lock()]))


def test_unpicklable_result_is_a_serialization_error():
    with pytest.raises(nbscale.SerializationError, match="result of input 0 cannot be pickled"):
        returns_lock.remote(0)


def test_failing_input_iterator_raises_its_own_error():
    def inputs():
        yield 1
        yield 2
        raise KeyError("iterator broke")

    with pytest.raises(KeyError, match="iterator broke"):
        list(identity.map(inputs()))


def test_invalid_settings_are_rejected_at_decoration():
    with pytest.raises(nbscale.InvalidError, match="min_containers"):
        app.function(min_containers=3, max_containers=1)(lambda x: x)
    with pytest.raises(nbscale.InvalidError, match="timeout"):
        app.function(timeout=None)(lambda x: x)
    with pytest.raises(nbscale.InvalidError, match="backoff_coefficient"):
        nbscale.Retries(max_retries=1, backoff_coefficient=0.5)
    with pytest.raises(TypeError):
        app.function(type("K", (), {}))


def test_public_surface_is_explicit_and_sorted():
    assert nbscale.__all__ == sorted(nbscale.__all__)
    for name in nbscale.__all__:
        assert hasattr(nbscale, name)
    for name in (n for n in nbscale.__all__ if n.endswith("Error")):
        assert issubclass(getattr(nbscale, name), nbscale.NbscaleError)
    assert issubclass(nbscale.FunctionTimeoutError, TimeoutError)
