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
    __slots__ = ("__doc__", "_fn", "_obj")

    def __init__(self, fn: Callable[..., Coroutine[Any, Any, T]], obj: Any) -> None:
        self._fn = fn
        self._obj = obj
        self.__doc__ = fn.__doc__

    def __call__(self, *args: Any, **kwargs: Any) -> T:
        __tracebackhide__ = hidden()  # IPython leaves this frame out of tracebacks
        return get_loop().run(self._fn(self._obj, *args, **kwargs))

    async def aio(self, *args: Any, **kwargs: Any) -> T:
        __tracebackhide__ = hidden()
        return await get_loop().run_aio(self._fn(self._obj, *args, **kwargs))


class aio_method(Generic[T]):
    """Decorator for an ``async def`` method: a blocking call plus an ``.aio`` twin."""

    def __init__(self, fn: Callable[..., Coroutine[Any, Any, T]]) -> None:
        self._fn = fn
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return _Bound(self._fn, obj)


class aio_classmethod(aio_method[T]):
    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        return _Bound(self._fn, owner)
