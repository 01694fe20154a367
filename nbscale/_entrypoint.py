"""``@app.local_entrypoint()``, and the command line ``nbscale run`` makes of a function's
signature, as ``modal run`` does.

Each parameter becomes an option ``--name`` (underscores written as dashes) of its
annotated type: ``str`` (or no annotation), ``int``, ``float``, ``bool`` (``--name`` /
``--no-name``) or ``datetime.datetime`` (ISO 8601); ``Optional[T]`` is ``T``. A parameter
with a default may be left out, one without is required. A function whose only parameter
is ``*args`` gets the arguments as they are, strings, to parse itself.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import functools
import inspect
import types
import typing
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ._loop import loop_running
from .exceptions import InvalidError

if TYPE_CHECKING:
    from ._app import App

_PARSERS: dict[Any, Callable[[str], Any]] = {
    str: str,
    int: int,
    float: float,
    datetime.datetime: datetime.datetime.fromisoformat,
    Any: str,
}


class LocalEntrypoint:
    """A function that runs here, in the calling process, and starts the work: what
    ``nbscale run FILE.py`` runs. Calling it runs it, as a plain call (an ``async`` one is
    run to completion when no event loop runs here, else returned to be awaited)."""

    def __init__(self, raw: Callable[..., Any], app: App, name: str) -> None:
        self.raw_f = raw
        self.app = app
        self.name = name
        functools.update_wrapper(self, raw)

    def __repr__(self) -> str:
        return f"<nbscale.LocalEntrypoint {self.name}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        result = self.raw_f(*args, **kwargs)
        if inspect.iscoroutine(result) and not loop_running():
            return asyncio.run(result)
        return result


def takes_raw_arguments(fn: Callable[..., Any]) -> bool:
    """Whether ``fn``'s only parameter is ``*args``: it gets the arguments unparsed."""
    params = list(inspect.signature(fn).parameters.values())
    return len(params) == 1 and params[0].kind is inspect.Parameter.VAR_POSITIONAL


def _parser_of(name: str, annotation: Any) -> tuple[Callable[[str], Any] | None, str]:
    """The parser of a parameter's annotation (None for ``bool``) and its name in help."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        others = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(others) == 1:
            annotation = others[0]
    if annotation is bool:
        return None, "bool"
    parser = _PARSERS.get(annotation)
    if parser is None:
        raise InvalidError(
            f"parameter {name!r} is annotated {annotation!r}, which nbscale run cannot parse "
            "from a command line: use str, int, float, bool or datetime.datetime"
        )
    return parser, "str" if annotation is Any else getattr(annotation, "__name__", "str")


def command_line(fn: Callable[..., Any], prog: str) -> argparse.ArgumentParser:
    """The command line of ``fn``'s parameters (``prog --help`` lists them)."""
    doc = inspect.getdoc(fn) or ""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=doc.split("\n\n")[0] or None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:  # an annotation this Python cannot evaluate
        raise InvalidError(f"cannot read the annotations of {prog}: {exc}") from None
    for param in inspect.signature(fn).parameters.values():
        if param.kind not in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
            raise InvalidError(
                f"{prog}: parameter {param.name!r} cannot come from a command line "
                "(nbscale run passes named parameters as --flags, or every argument to a "
                "function whose only parameter is *args)"
            )
        convert, type_name = _parser_of(param.name, hints.get(param.name, Any))
        flag = "--" + param.name.replace("_", "-")
        required = param.default is inspect.Parameter.empty
        said = "required" if required else f"default: {param.default!r}"
        options: dict[str, Any] = {"dest": param.name, "required": required}
        if not required:
            options["default"] = param.default
        if convert is None:
            options["action"] = argparse.BooleanOptionalAction
        else:
            options["type"] = _named(convert, type_name)
            options["metavar"] = type_name.upper()
        parser.add_argument(flag, help=f"{type_name} ({said})", **options)
    return parser


def _named(convert: Callable[[str], Any], type_name: str) -> Callable[[str], Any]:
    # argparse names the type in its error ("invalid int value: 'x'") from __name__.
    def parse(text: str) -> Any:
        return convert(text)

    parse.__name__ = type_name
    return parse


def parse_arguments(
    fn: Callable[..., Any], prog: str, argv: Sequence[str]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The positional and keyword arguments of ``fn`` from a command line ``argv`` (exits
    as argparse does: 0 after ``--help``, 2 for a bad one); a function whose only parameter
    is ``*args`` gets ``argv`` itself."""
    if takes_raw_arguments(fn):
        return tuple(argv), {}
    return (), vars(command_line(fn, prog).parse_args(list(argv)))
