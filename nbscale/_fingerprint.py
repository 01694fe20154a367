"""When a function's pickle can be reused instead of pickled again.

A notebook function is pickled by value with the globals it uses, so every call pickles it
again: a global rebound in another cell must reach the workers. That costs tens of
microseconds per ``.remote()``. This module finds the functions whose pickle cannot have
changed since the last time: every global, default and closure value they use is the very
same object as then, and each is immutable (numbers, strings, tuples of them), a module, or
something cloudpickle pickles by reference (an importable function or class). A function
that uses anything else (a list, an array, a helper defined in the notebook) has no
fingerprint and is pickled every time, as before.
"""

from __future__ import annotations

import types
import weakref
from collections.abc import Iterator
from typing import Any

try:  # private, so guarded: without it nothing is reused, which is only slower
    from cloudpickle.cloudpickle import _should_pickle_by_reference
except ImportError:  # pragma: no cover
    _should_pickle_by_reference = None

_ATOMS = (type(None), bool, int, float, complex, str, bytes, range, type(Ellipsis))
_ABSENT = object()  # a name the function's globals do not bind (a builtin, an attribute)
_HEAD = 8  # the function's own parts that lead a fingerprint; the values it uses follow
# Per code object, weakly: functions redefined cell after cell must not pile up here.
_names_cache: weakref.WeakKeyDictionary[types.CodeType, tuple[str, ...]] = (
    weakref.WeakKeyDictionary()
)


def _code_names(code: types.CodeType) -> Iterator[str]:
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):  # nested functions, lambdas, comprehensions
            yield from _code_names(const)


def _global_names(code: types.CodeType) -> tuple[str, ...]:
    names = _names_cache.get(code)
    if names is None:
        names = _names_cache[code] = tuple(dict.fromkeys(_code_names(code)))
    return names


def fingerprint(fn: Any) -> tuple[Any, ...] | None:
    """The objects a pickle of ``fn`` depends on, to compare by identity with the ones it
    was last pickled with; None when they may change unseen (``fn`` must be pickled)."""
    code = getattr(fn, "__code__", None)
    if not isinstance(fn, types.FunctionType) or code is None or fn.__dict__:
        return None
    g = fn.__globals__
    values: list[Any] = [code, g, fn.__defaults__, fn.__kwdefaults__, fn.__name__]
    values += [fn.__qualname__, fn.__module__, fn.__doc__]
    values += [g.get(name, _ABSENT) for name in _global_names(code)]
    values += fn.__defaults__ or ()
    values += (fn.__kwdefaults__ or {}).values()
    values += fn.__annotations__.values()
    for cell in fn.__closure__ or ():
        try:
            values.append(cell.cell_contents)
        except ValueError:  # an empty cell: its variable is not bound yet
            return None
    return tuple(values)


def frozen(fp: tuple[Any, ...]) -> bool:
    """Whether every value of a fingerprint is one that cannot change in place."""
    return _should_pickle_by_reference is not None and all(_frozen(v) for v in fp[_HEAD:])


def _frozen(value: Any) -> bool:
    if value is _ABSENT or isinstance(value, _ATOMS):
        return True
    if type(value) in (tuple, frozenset):
        return all(_frozen(v) for v in value)
    # A module, function or class cloudpickle pickles by name; not one it pickles by value
    # (defined in the notebook, or registered with register_pickle_by_value).
    by_reference = (types.ModuleType, types.FunctionType, type, types.BuiltinFunctionType)
    if isinstance(value, by_reference):
        return bool(_should_pickle_by_reference(value))  # type: ignore[misc]
    return False


def same(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))
