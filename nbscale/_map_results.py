"""``f.map``, ``f.starmap`` and ``f.for_each``: the map's public face, and its live view.

``MapResults`` is one map's results: iterate it (blocking), ``async for`` it or ``await`` it.
The consumer drives the map's view (``_views``): it wakes a few times a second to redraw
even when no result arrives. The view knows the map's total beforehand when the inputs have
a ``len()`` (or the caller says ``total=``): then it shows a percentage and an ETA, which
without a known total it does not (tqdm's rule).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from nbscale_server.values import is_count

from . import _config
from ._chunks import OneArgument
from ._loop import get_loop
from ._map import End, Invocation
from ._outcomes import Output, Values, print_output
from ._progress import CallProgress
from ._tracebacks import hidden, install
from ._views import LiveMap, MapView, open_view
from ._views.live import REFRESH_INTERVAL
from .exceptions import InvalidError

if TYPE_CHECKING:
    from ._function import Function

Inputs = Iterator[tuple[tuple[Any, ...], dict[str, Any]]]


def zip_inputs(iterables: tuple[Iterable[Any], ...], kwargs: dict[str, Any] | None) -> Inputs:
    if len(iterables) == 1 and not kwargs:  # pulled as the values themselves
        return OneArgument(iterables[0])
    kw = dict(kwargs or {})
    return ((args, kw) for args in zip(*iterables, strict=False))


def star_inputs(iterable: Iterable[Any], kwargs: dict[str, Any] | None) -> Inputs:
    kw = dict(kwargs or {})
    return ((tuple(args), kw) for args in iterable)


def known_total(iterables: Iterable[Any], total: int | None) -> int | None:
    """The number of inputs, known before they run: ``total=`` when given, else the
    shortest ``len()`` of the iterables (zip stops there) when every one has a length."""
    if total is not None:
        if not is_count(total):
            raise InvalidError(f"total must be a number of inputs (an int >= 0), got {total!r}")
        return total
    lengths = []
    for it in iterables:
        try:
            lengths.append(len(it))
        except TypeError:  # a generator, an iterator: no length without consuming it
            return None
    return min(lengths) if lengths else None


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
        total: int | None,
    ) -> MapResults:
        self._fn._refuse_generator(".map()")
        if self._star:
            if len(args) != 1:
                raise InvalidError("starmap takes one iterable of argument tuples")
            inputs = self._make_inputs(args[0], kwargs)
        else:
            if not args:
                raise InvalidError("map needs at least one iterable")
            inputs = self._make_inputs(args, kwargs)
        count = known_total(args, total)
        return MapResults(self._fn, inputs, order_outputs, return_exceptions, total=count)

    def __call__(
        self,
        *iterables: Iterable[Any],
        kwargs: dict[str, Any] | None = None,
        order_outputs: bool = True,
        return_exceptions: bool = False,
        wrap_returned_exceptions: bool | None = None,
        total: int | None = None,
    ) -> Iterator[Any]:
        """``wrap_returned_exceptions`` is accepted for Modal's programs: exceptions are
        returned bare either way, as Modal 1.4 does. ``total``: the number of inputs, for the
        view, when they have no ``len()``."""
        return iter(self._results(iterables, kwargs, order_outputs, return_exceptions, total))

    def aio(
        self,
        *iterables: Iterable[Any],
        kwargs: dict[str, Any] | None = None,
        order_outputs: bool = True,
        return_exceptions: bool = False,
        wrap_returned_exceptions: bool | None = None,
        total: int | None = None,
    ) -> MapResults:
        return self._results(iterables, kwargs, order_outputs, return_exceptions, total)


class ForEachMethod:
    """``f.for_each(...)`` consumes a map in the caller's thread, which also drives its live
    view; ``f.for_each.aio(...)`` is its async twin."""

    def __init__(self, fn: Function) -> None:
        self._fn = fn

    def _results(
        self,
        iterables: tuple[Iterable[Any], ...],
        kwargs: dict[str, Any] | None,
        ignore_exceptions: bool,
        total: int | None,
    ) -> MapResults:
        inputs = zip_inputs(iterables, kwargs)
        count = known_total(iterables, total)
        return MapResults(self._fn, inputs, False, ignore_exceptions, total=count)

    def __call__(
        self,
        *iterables: Iterable[Any],
        kwargs: dict[str, Any] | None = None,
        ignore_exceptions: bool = False,
        total: int | None = None,
    ) -> None:
        __tracebackhide__ = hidden()
        self._fn._refuse_generator(".for_each()")
        for _ in self._results(iterables, kwargs, ignore_exceptions, total):
            pass

    async def aio(
        self,
        *iterables: Iterable[Any],
        kwargs: dict[str, Any] | None = None,
        ignore_exceptions: bool = False,
        total: int | None = None,
    ) -> None:
        __tracebackhide__ = hidden()
        self._fn._refuse_generator(".for_each()")
        async for _ in self._results(iterables, kwargs, ignore_exceptions, total):
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
        *,
        total: int | None = None,
    ) -> None:
        self._fn = fn
        self._inputs = fn._inputs(inputs)
        self._order = order_outputs
        self._return_exceptions = return_exceptions
        self._total = total
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
            self.progress = CallProgress(
                self._fn.name,
                self._total,
                self._fn.options.max_inputs,
                _config.get("progress_outputs_kept"),
            )
        elif self.progress.total is None:
            self.progress.total = self._total
        return LiveMap(view, self.progress)

    async def _start(self, live: LiveMap | None) -> Invocation:
        on_build = live.preparing if live is not None else None  # an image build's steps
        inv = await self._fn._invocation("map", self._order, self.progress, on_build)
        inv.start_feeding(self._inputs)
        self.invocation = inv
        return inv

    def _unpack(self, batch: list[Output | Values]) -> Iterator[list[Any]]:
        """The values of ``batch``, a list at a time (a run's results as one: its consumer
        takes them without a step of this generator each), what each input printed shown
        just before its value."""
        __tracebackhide__ = hidden()
        for each in batch:
            outs: Iterable[Output]
            if isinstance(each, Values):  # a run's results: all returned, none printed
                try:
                    values = each.load()
                except Exception:  # one cannot be unpickled here: it fails alone
                    outs = each.outputs()
                else:
                    yield values
                    continue
            else:
                outs = (each,)
            for out in outs:
                print_output(out, prefix=True)
                if not out.ok and not self._return_exceptions:
                    raise out.value
                yield [out.value]

    def __iter__(self) -> Iterator[Any]:
        __tracebackhide__ = hidden()  # IPython leaves this frame out of tracebacks
        install()  # a notebook's tracebacks then leave all of nbscale's frames out
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
                batch: list[Output | Values] | End | None
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
                for values in self._unpack(batch):
                    yield from values
        except BaseException as exc:
            error = exc
            raise
        finally:
            if not inv.finished:
                lt.submit(inv.cancel())
            if live is not None:
                live.close(error)

    async def __aiter__(self) -> AsyncIterator[Any]:
        __tracebackhide__ = hidden()
        install()
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
                batch: list[Output | Values] | End | None
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
                for values in self._unpack(batch):
                    for value in values:
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
            __tracebackhide__ = hidden()
            return [value async for value in self]

        return collect().__await__()
