"""One implementation, two faces: ``obj.method(...)`` blocks, ``obj.method.aio(...)`` awaits.

Methods are written once as coroutines that run on nbscale's background loop.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

from ._loop import get_loop
from ._tracebacks import hidden

T = TypeVar("T")


class _Bound(Generic[T]):
    __slots__ = ("__doc__", "_fn", "_lend_slot", "_obj")

    def __init__(
        self, fn: Callable[..., Coroutine[Any, Any, T]], obj: Any, lend_slot: bool = True
    ) -> None:
        self._fn = fn
        self._obj = obj
        self._lend_slot = lend_slot
        self.__doc__ = fn.__doc__

    def __call__(self, *args: Any, **kwargs: Any) -> T:
        __tracebackhide__ = hidden()  # IPython leaves this frame out of tracebacks
        coro = self._fn(self._obj, *args, **kwargs)
        return get_loop().run(coro, lend_slot=self._lend_slot)

    async def aio(self, *args: Any, **kwargs: Any) -> T:
        __tracebackhide__ = hidden()
        return await get_loop().run_aio(self._fn(self._obj, *args, **kwargs))


class aio_method(Generic[T]):
    """Decorator for an ``async def`` method: a blocking call plus an ``.aio`` twin."""

    # On a worker, whether a blocking call lends the worker's slot while it waits: calls of
    # functions do (their inputs may need the slot); waits on data do not (a pool of
    # workers each waiting on a Queue would otherwise grow past max_containers).
    lend_slot = True

    def __init__(self, fn: Callable[..., Coroutine[Any, Any, T]]) -> None:
        self._fn = fn
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return _Bound(self._fn, obj, self.lend_slot)


class data_method(aio_method[T]):
    """An ``aio_method`` that waits on shared data (a Dict, a Queue): keeps its slot."""

    lend_slot = False


class aio_classmethod(aio_method[T]):
    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        return _Bound(self._fn, owner)
