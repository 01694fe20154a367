"""A class served by a pool (``@app.cls``), as a worker loads it, and how one input's call
is made (plain values, coroutines, generators).

The caller pickles a ``ClassService``: the user's class, one set of its parameters, the names
of its ``@enter``/``@exit`` hooks and its ``@batched`` methods. The worker builds the instance
once (``start``: parameters set, then each ``@enter``, within ``startup_timeout``), runs the
inputs (each one's arguments begin with the method's name), and calls the ``@exit`` hooks
when it stops (``stop``). This module holds no reference to the ``nbscale`` client: a worker
image carries only ``nbscale_runtime``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

RunCoroutine = Callable[[Coroutine[Any, Any, Any]], Any]  # runs one to its end, blocking
Emit = Callable[[Any], None]  # takes each value a generator yields


@dataclass(frozen=True)
class Parameter:
    """``nbscale.parameter()`` as it stands in a class body (here, so that a worker without
    the client can unpickle the class)."""

    default: Any
    init: bool = True


@dataclass
class ClassService:
    cls: type
    params: dict[str, Any]
    enter: list[str] = field(default_factory=list)
    exit: list[str] = field(default_factory=list)
    # method name -> (max_batch_size, wait_ms) for @batched methods
    batched: dict[str, tuple[int, int]] = field(default_factory=dict)
    startup_timeout: float = 300.0  # seconds for the hooks of ``enter`` together
    instance: Any = None

    def start(self, run: RunCoroutine) -> None:
        """Build the instance and run its ``@enter`` hooks (async ones through ``run``)."""
        cls: Any = self.cls
        obj = cls.__new__(cls)
        for name, value in self.params.items():
            setattr(obj, name, value)
        if cls.__init__ is not object.__init__:
            cls.__init__(obj)  # a constructor without arguments (parameters are set above)
        self.instance = obj
        for name in self.enter:
            _finish(getattr(obj, name)(), run)

    def stop(self, run: RunCoroutine) -> None:
        """Run the ``@exit`` hooks, each even when one before it failed."""
        if self.instance is None:
            return
        for name in self.exit:
            try:
                _finish(getattr(self.instance, name)(), run)
            except Exception as exc:  # the worker exits anyway; its log says why
                print(f"@exit {name} raised {type(exc).__name__}: {exc}", flush=True)

    def method(self, name: Any) -> Callable[..., Any]:
        if self.instance is None:
            raise RuntimeError(f"{self.cls.__qualname__} was not started")
        return getattr(self.instance, name)  # type: ignore[no-any-return]


def run_alone(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine on a loop of its own (asyncio is imported only when one is run: it
    costs a worker 30 ms to start)."""
    import asyncio

    return asyncio.run(coro)


def _finish(result: Any, run: RunCoroutine) -> Any:
    return run(result) if inspect.iscoroutine(result) else result


def target(fn: Any, args: tuple[Any, ...]) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    """What to call for an input's ``args``: a class's method (named by the first
    argument) with the rest, or the function itself."""
    if isinstance(fn, ClassService):
        return fn.method(args[0]), args[1:]
    return fn, args


def is_generator(func: Callable[..., Any]) -> bool:
    return inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func)


def _yields(result: Any) -> bool:
    """Whether a call's result may come from a generator function: two type checks, where
    asking the function costs a few microseconds per input."""
    return inspect.isgenerator(result) or inspect.isasyncgen(result)


def call(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], emit: Emit) -> Any:
    """Run one input on this thread: a coroutine (an async method of a class whose other
    methods are not) runs on a loop of its own; a generator's values go to ``emit`` as it
    yields them, and the result is None."""
    func, args = target(fn, args)
    result = func(*args, **kwargs)
    if inspect.iscoroutine(result):
        result = run_alone(result)
    if not _yields(result) or not is_generator(func):
        return result
    if inspect.isasyncgen(result):
        run_alone(_drain(result, emit))
    else:
        for value in result:
            emit(value)
    return None


async def call_async(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], emit: Emit) -> Any:
    """``call`` on the worker's asyncio loop."""
    func, args = target(fn, args)
    result = func(*args, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    if not _yields(result) or not is_generator(func):
        return result
    if inspect.isasyncgen(result):
        await _drain(result, emit)
    else:
        for value in result:
            emit(value)
    return None


async def _drain(agen: Any, emit: Emit) -> None:
    async for value in agen:
        emit(value)
