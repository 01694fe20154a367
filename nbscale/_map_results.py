"""A map's call: ``f.map``, ``f.starmap`` and ``f.for_each`` with their ``.aio`` twins, and
``MapResults``, which runs one map as it is iterated (blocking, ``async for`` or ``await``)
and drives its live view."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ._loop import get_loop
from ._map import End, Invocation
from ._outcomes import Output, print_output
from ._progress import CallProgress
from ._views import LiveMap, MapView, open_view
from ._views.live import REFRESH_INTERVAL
from .exceptions import InvalidError

if TYPE_CHECKING:
    from ._function import Function

Inputs = Iterator[tuple[tuple[Any, ...], dict[str, Any]]]


def zip_inputs(iterables: tuple[Iterable[Any], ...], kwargs: dict[str, Any] | None) -> Inputs:
    kw = dict(kwargs or {})
    return ((args, kw) for args in zip(*iterables, strict=False))


def star_inputs(iterable: Iterable[Any], kwargs: dict[str, Any] | None) -> Inputs:
    kw = dict(kwargs or {})
    return ((tuple(args), kw) for args in iterable)


class MapMethod:
    """``f.map(...)`` (blocking iterator) with ``f.map.aio(...)`` (async iterator)."""

    def __init__(self, fn: Function, make_inputs: Callable[..., Inputs], star: bool) -> None:
        self._fn = fn
        self._make_inputs = make_inputs
        self._star = star

    def _results(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None,
        order_outputs: bool,
        return_exceptions: bool,
    ) -> MapResults:
        if self._star:
            if len(args) != 1:
                raise InvalidError("starmap takes one iterable of argument tuples")
            inputs = self._make_inputs(args[0], kwargs)
        else:
            if not args:
                raise InvalidError("map needs at least one iterable")
            inputs = self._make_inputs(args, kwargs)
        return MapResults(self._fn, inputs, order_outputs, return_exceptions)

    def __call__(
        self,
        *iterables: Iterable[Any],
        kwargs: dict[str, Any] | None = None,
        order_outputs: bool = True,
        return_exceptions: bool = False,
    ) -> Iterator[Any]:
        return iter(self._results(iterables, kwargs, order_outputs, return_exceptions))

    def aio(
        self,
        *iterables: Iterable[Any],
        kwargs: dict[str, Any] | None = None,
        order_outputs: bool = True,
        return_exceptions: bool = False,
    ) -> MapResults:
        return self._results(iterables, kwargs, order_outputs, return_exceptions)


class ForEachMethod:
    """``f.for_each(...)`` consumes a map in the caller's thread, which also drives its live
    view; ``f.for_each.aio(...)`` is its async twin."""

    def __init__(self, fn: Function) -> None:
        self._fn = fn

    def __call__(
        self,
        *iterables: Iterable[Any],
        kwargs: dict[str, Any] | None = None,
        ignore_exceptions: bool = False,
    ) -> None:
        for _ in MapResults(self._fn, zip_inputs(iterables, kwargs), False, ignore_exceptions):
            pass

    async def aio(
        self,
        *iterables: Iterable[Any],
        kwargs: dict[str, Any] | None = None,
        ignore_exceptions: bool = False,
    ) -> None:
        results = MapResults(self._fn, zip_inputs(iterables, kwargs), False, ignore_exceptions)
        async for _ in results:
            pass


class MapResults:
    """The results of one map: iterate (blocking), ``async for``, or ``await`` for a list.
    Nothing runs until it is iterated."""

    def __init__(
        self,
        fn: Function,
        inputs: Inputs,
        order_outputs: bool,
        return_exceptions: bool,
        progress: CallProgress | None = None,
        view: MapView | None = None,
    ) -> None:
        self._fn = fn
        self._inputs = inputs
        self._order = order_outputs
        self._return_exceptions = return_exceptions
        self.progress = progress  # filled in while the map runs, for a live view
        self._view = view  # None: the one the ``progress`` setting picks, if any
        self.invocation: Invocation | None = None

    def _live(self) -> LiveMap | None:
        """The live view of this map, or None when progress is off: then nothing runs per
        batch or per input that would not run without views."""
        view = self._view if self._view is not None else open_view()
        if view is None:
            return None
        if self.progress is None:
            self.progress = CallProgress(self._fn.name)
        return LiveMap(view, self.progress)

    async def _start(self, live: LiveMap | None) -> Invocation:
        on_build = live.preparing if live is not None else None  # an image build's steps
        inv = await self._fn._invocation("map", self._order, self.progress, on_build)
        inv.start_feeding(self._inputs)
        self.invocation = inv
        return inv

    def _unpack(self, batch: list[Output]) -> Iterator[Any]:
        for out in batch:
            print_output(out, prefix=True)
            if not out.ok and not self._return_exceptions:
                raise out.value
            yield out.value

    def __iter__(self) -> Iterator[Any]:
        lt = get_loop()
        live = self._live()
        if live is not None:
            live.show()
        try:
            inv = lt.run(self._start(live))
        except BaseException as exc:  # e.g. its image could not be built: the view says so
            if live is not None:
                live.close(exc)
            raise
        if live is not None:
            live.start(inv)
        error: BaseException | None = None
        try:
            while True:
                batch: list[Output] | End | None
                if live is None:
                    batch = lt.run(inv.next_batch(), on_interrupt=inv.cancel)
                else:  # wake up to redraw the view even while no result arrives
                    batch = lt.run(inv.next_batch_within(REFRESH_INTERVAL), on_interrupt=inv.cancel)
                    live.step(force=isinstance(batch, End))
                    if batch is None:
                        continue
                if isinstance(batch, End):
                    if batch.error is not None:
                        raise batch.error
                    return
                yield from self._unpack(batch)
        except BaseException as exc:
            error = exc
            raise
        finally:
            if not inv.finished:
                lt.submit(inv.cancel())
            if live is not None:
                live.close(error)

    async def __aiter__(self) -> AsyncIterator[Any]:
        lt = get_loop()
        live = self._live()
        if live is not None:
            live.show()
        try:
            inv = await lt.run_aio(self._start(live))
        except BaseException as exc:
            if live is not None:
                live.close(exc)
            raise
        if live is not None:
            live.start(inv)
        error: BaseException | None = None
        try:
            while True:
                batch: list[Output] | End | None
                if live is None:
                    batch = await lt.run_aio(inv.next_batch())
                else:
                    batch = await lt.run_aio(inv.next_batch_within(REFRESH_INTERVAL))
                    await live.step_aio(force=isinstance(batch, End))
                    if batch is None:
                        continue
                if isinstance(batch, End):
                    if batch.error is not None:
                        raise batch.error
                    return
                for value in self._unpack(batch):
                    yield value
        except BaseException as exc:
            error = exc
            raise
        finally:
            if not inv.finished:
                await lt.run_aio(inv.cancel())
            if live is not None:
                live.close(error)

    def __await__(self) -> Any:
        async def collect() -> list[Any]:
            return [value async for value in self]

        return collect().__await__()
