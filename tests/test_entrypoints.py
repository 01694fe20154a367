"""What `nbscale run` makes of a script, without running it: the command line of an
entrypoint's signature (as `modal run` parses it), and which entrypoint or function a
FILE.py[::NAME] names, with the choices listed when it is not clear."""

from __future__ import annotations

import datetime
import types
from typing import Any, Optional

import pytest

import nbscale
from nbscale._entrypoint import command_line, parse_arguments
from nbscale._script import choose, split_ref


def sweep(
    n: int,
    rate: float = 0.5,
    name: str = "run",
    dry_run: bool = False,
    start: datetime.datetime | None = None,
    note=None,
    limit: Optional[int] = None,  # noqa: UP045 - Modal programs spell it both ways
):
    """Sweep N settings.

    More words that --help leaves out."""


def parse(fn: Any, *argv: str) -> Any:
    return parse_arguments(fn, "nbscale run s.py::sweep", argv)


def test_parameters_become_typed_flags_with_their_defaults():
    args, kwargs = parse(sweep, "--n", "3")
    assert args == ()
    assert kwargs == {
        "n": 3,
        "rate": 0.5,
        "name": "run",
        "dry_run": False,
        "start": None,
        "note": None,
        "limit": None,
    }
    _, kwargs = parse(
        sweep,
        "--n=4",
        "--rate",
        "2.5",
        "--name",
        "x",
        "--dry-run",
        "--start",
        "2025-01-02T03:04:05",
        "--note",
        "hi",
        "--limit",
        "7",
    )
    assert kwargs == {
        "n": 4,
        "rate": 2.5,
        "name": "x",
        "dry_run": True,
        "start": datetime.datetime(2025, 1, 2, 3, 4, 5),
        "note": "hi",
        "limit": 7,
    }
    assert parse(sweep, "--n", "1", "--no-dry-run")[1]["dry_run"] is False


def test_help_lists_the_flags(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as done:
        parse(sweep, "--help")
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: nbscale run s.py::sweep")
    assert "Sweep N settings." in out and "More words" not in out
    for flag in ("--n INT", "--rate FLOAT", "--name STR", "--dry-run, --no-dry-run", "--start"):
        assert flag in out
    assert "int (required)" in out and "float (default: 0.5)" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ((), "the following arguments are required: --n"),
        (("--n", "many"), "argument --n: invalid int value: 'many'"),
        (("--n", "1", "--colour", "blue"), "unrecognized arguments: --colour blue"),
    ],
)
def test_a_bad_command_line_exits_2(
    argv: tuple[str, ...], message: str, capsys: pytest.CaptureFixture[str]
):
    with pytest.raises(SystemExit) as done:
        parse(sweep, *argv)
    assert done.value.code == 2
    assert message in capsys.readouterr().err


def test_a_star_args_entrypoint_gets_the_arguments_as_they_are():
    def main(*arglist):
        pass

    assert parse(main, "--x", "1", "y") == (("--x", "1", "y"), {})


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (lambda items: None, None),
        (lambda *a, b: None, "parameter 'a' cannot come from a command line"),
    ],
)
def test_parameters_a_command_line_cannot_give(fn: Any, message: str | None):
    if message is None:
        parse(fn, "--items", "x")  # unannotated: a string
        return
    with pytest.raises(nbscale.InvalidError, match=message):
        command_line(fn, "p")


def test_an_annotation_it_cannot_parse_is_named():
    def main(items: list[int]):
        pass

    with pytest.raises(nbscale.InvalidError, match="'items' is annotated list\\[int\\]"):
        command_line(main, "p")


# --- choosing what to run ----------------------------------------------------------------


def script(**apps: nbscale.App) -> types.ModuleType:
    module = types.ModuleType("script")
    vars(module).update(apps)
    return module


def make_app(name: str, entrypoints: list[str], functions: list[str]) -> nbscale.App:
    app = nbscale.App(name)
    for n in entrypoints:
        app.local_entrypoint(name=n)(lambda: None)
    for n in functions:
        app.function(name=n)(lambda x: x)
    return app


def test_the_one_entrypoint_runs_else_the_one_function():
    target = choose(script(app=make_app("a", ["main"], ["f", "g"])), None, "s.py")
    assert (target.name, target.kind) == ("main", "local entrypoint")
    target = choose(script(app=make_app("a", [], ["f"])), None, "s.py")
    assert (target.name, target.kind) == ("f", "function, on a worker")
    assert target.function is not None and target.app.name == "a"


def test_several_choices_are_listed_and_one_is_named():
    module = script(app=make_app("a", ["main", "other"], ["f"]))
    with pytest.raises(nbscale.InvalidError) as caught:
        choose(module, None, "s.py")
    first, *rest = str(caught.value).splitlines()
    assert first == (
        "s.py has 2 local entrypoints and 1 function: name the one to run, "
        "e.g. nbscale run s.py::main"
    )
    assert rest == [
        "main   (local entrypoint)",
        "other  (local entrypoint)",
        "f      (function, runs on a worker)",
    ]
    assert choose(module, "other", "s.py").name == "other"
    assert choose(module, "f", "s.py").function is not None
    with pytest.raises(nbscale.InvalidError, match=r"s\.py has no entrypoint or function 'nope'"):
        choose(module, "nope", "s.py")


def test_an_app_is_named_among_several():
    module = script(train=make_app("t", ["main"], []), serve=make_app("s", ["main"], []))
    assert choose(module, "serve.main", "s.py").app.name == "s"
    with pytest.raises(nbscale.InvalidError, match="has no app 'other' \\(apps: train, serve\\)"):
        choose(module, "other.main", "s.py")
    with pytest.raises(nbscale.InvalidError, match="2 local entrypoints") as caught:
        choose(module, None, "s.py")
    assert str(caught.value).splitlines()[1:] == [
        "train.main  (local entrypoint)",
        "serve.main  (local entrypoint)",
    ]
    with pytest.raises(nbscale.InvalidError, match="has 2 of the name 'main'"):
        choose(module, "main", "s.py")


def test_a_script_without_an_app_or_anything_to_run():
    with pytest.raises(nbscale.InvalidError, match=r"s\.py defines no app"):
        choose(script(), None, "s.py")
    with pytest.raises(nbscale.InvalidError, match="no entrypoint or function to run"):
        choose(script(app=nbscale.App("empty")), None, "s.py")


def test_refs():
    assert split_ref("s.py") == ("s.py", None)
    assert split_ref("dir/s.py::app.main") == ("dir/s.py", "app.main")
    with pytest.raises(nbscale.InvalidError, match="did you mean '::'"):
        split_ref("s.py:main")
    with pytest.raises(nbscale.InvalidError, match="after '::'"):
        split_ref("s.py::")
