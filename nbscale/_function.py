"""``Function`` and ``FunctionCall``: Modal's invocation API over nbscale's control plane."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import sys
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from nbscale_runtime import protocol
from nbscale_runtime.protocol import OUT_WHERE
from nbscale_runtime.serialization import PayloadWriter, split_payload
from nbscale_server.options import FunctionOptions

from ._aio import aio_classmethod, aio_method
from ._client import Client, get_client
from ._fingerprint import fingerprint, frozen, same
from ._image import Image
from ._loop import get_loop
from ._map import End, Invocation
from ._options import check_image, function_options
from ._outcomes import Output, code_files_of, decode
from ._pickling import add_input, pickle_function
from ._progress import CallProgress
from ._views import LiveMap, MapView, open_view
from ._views.live import REFRESH_INTERVAL
from .exceptions import CallCancelledError, InvalidError

Inputs = Iterator[tuple[tuple[Any, ...], dict[str, Any]]]
_ANSWER_GRACE = 1.0  # seconds past a get's timeout for the control plane's answer to arrive
BuildOutput = Callable[[str], None]  # gets an image build's steps, one line each


@dataclass(frozen=True)
class FunctionStats:
    """A snapshot of a function's pool, as ``Function.get_current_stats()`` returns it."""

    backlog: int  # inputs waiting for a worker
    num_total_runners: int  # containers (workers) waiting for resources, starting or running
    num_running_inputs: int
    input_headroom: int  # free input slots on running workers
    containers: dict[str, int] = field(default_factory=dict)  # by state
    workers: list[dict[str, Any]] = field(default_factory=list)
    status: str = ""


def _zip_inputs(iterables: tuple[Iterable[Any], ...], kwargs: dict[str, Any] | None) -> Inputs:
    kw = dict(kwargs or {})
    return ((args, kw) for args in zip(*iterables, strict=False))


def _star_inputs(iterable: Iterable[Any], kwargs: dict[str, Any] | None) -> Inputs:
    kw = dict(kwargs or {})
    return ((tuple(args), kw) for args in iterable)


def _print_output(out: Output, prefix: bool) -> None:
    if not out.stdout:
        return
    if prefix:
        text = "".join(f"[{out.index}] {line}" for line in out.stdout.splitlines(keepends=True))
    else:
        text = out.stdout
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


class Function:
    """A function that runs on an autoscaled pool of workers. Create it with
    ``@app.function(...)``; call it with ``.remote``, ``.map``, ``.spawn``, ...
    (and ``.local`` to run it here)."""

    def __init__(
        self,
        raw: Callable[..., Any],
        name: str,
        options: FunctionOptions,
        image: Image | None = None,
    ) -> None:
        self.raw_f = raw
        self.name = name
        self.options = options
        self.image = image  # built into the tag ``options.image`` when Docker runs workers
        self._pools: dict[str, str] = {}  # function id -> pool id, per client
        self._client: Client | None = None
        self._code_files: dict[str, str] | None = None
        self._pickled: tuple[tuple[Any, ...], tuple[bytes, str]] | None = None  # see _pickle

    def __getstate__(self) -> dict[str, Any]:
        # A Function used inside another remote function travels without its connection.
        return {
            "raw_f": self.raw_f,
            "name": self.name,
            "options": self.options,
            "image": self.image,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["raw_f"], state["name"], state["options"], state["image"]
        )

    def __repr__(self) -> str:
        return f"<nbscale.Function {self.name}>"

    def local(self, *args: Any, **kwargs: Any) -> Any:
        """Run the function in this process, as a plain call."""
        result = self.raw_f(*args, **kwargs)
        if inspect.iscoroutine(result):
            return asyncio.run(result) if not _loop_running() else result
        return result

    def with_options(self, **settings: Any) -> Function:
        """A variant of this function with other settings, and a pool of its own."""
        return self._with_settings(settings, variant=True)

    def _with_settings(self, settings: dict[str, Any], *, variant: bool = False) -> Function:
        """This function with ``settings`` changed; a ``variant`` gets a pool of its own
        even where only its autoscaler settings differ."""
        image = check_image(settings.pop("image", self.image))
        options = function_options(self.raw_f, settings, self.options, variant=variant)
        return Function(self.raw_f, self.name, options, image)

    # --- the pool ----------------------------------------------------------------------

    def _pickle(self) -> tuple[bytes, str]:
        """The function's pickle and content id, reused while nothing it holds can differ."""
        fp = fingerprint(self.raw_f)
        if fp is not None and self._pickled is not None and same(fp, self._pickled[0]):
            return self._pickled[1]
        pickled = pickle_function(self.raw_f)
        self._pickled = (fp, pickled) if fp is not None and frozen(fp) else None
        return pickled

    async def _pool_id(self, client: Client, on_build: BuildOutput | None = None) -> str:
        """The function's pool on ``client``'s control plane, registered on first use (for
        Docker workers, after its image is built; ``on_build`` gets the build's steps)."""
        data, function_id = self._pickle()
        if self._client is not client:
            self._pools.clear()
            self._client = client
        pool_id = self._pools.get(function_id)
        if pool_id is None:
            options = await self._wire_options(client, on_build)
            msg = protocol.RegisterFunction(
                0, function_id, self.name, options.to_wire(), [p for p in sys.path if p]
            )
            value, _ = await client.request(msg, [data])
            pool_id = value["pool_id"]
            self._pools[function_id] = pool_id
        return pool_id

    async def _wire_options(
        self, client: Client, on_build: BuildOutput | None = None
    ) -> FunctionOptions:
        """The options as the control plane takes them: for Docker workers the image is the
        tag of the built image (built here, off the loop, when it does not exist yet, its
        steps printed or given to ``on_build``); for Kubernetes workers, that image pushed
        to the control plane's registry; for worker processes there is none."""
        launcher = client.server_info.get("launcher")
        if launcher not in ("docker", "kubernetes"):
            return self.options
        from ._image_build import build, image_for, print_step

        image = image_for(self.raw_f, self.image)
        out = on_build or print_step
        if launcher == "kubernetes":
            from ._image_push import kubernetes_image

            registry = client.server_info.get("registry")
            tag = await asyncio.to_thread(kubernetes_image, image, registry, out)
        else:
            tag = await asyncio.to_thread(build, image, None, out)
        return dataclasses.replace(self.options, image=tag)

    async def _invocation(
        self,
        kind: str,
        order_outputs: bool = True,
        progress: CallProgress | None = None,
        on_build: BuildOutput | None = None,
    ) -> Invocation:
        client = await get_client()
        pool_id = await self._pool_id(client, on_build)
        if self._code_files is None:
            self._code_files = code_files_of(self.raw_f)
        return Invocation(
            client,
            pool_id,
            kind,
            self.name,
            self.options.timeout,
            order_outputs,
            code_files=self._code_files,
            progress=progress,
        )

    # --- single calls ------------------------------------------------------------------

    @aio_method
    async def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Run the function once on a worker and return its result (or raise its error)."""
        inv = await self._invocation("remote")
        writer = PayloadWriter()
        where = add_input(writer, 0, args, kwargs)
        try:
            inv.total = 1
            await inv.submit([[0, *where]], writer.frames(), total=1)
            batch = await inv.next_batch()
            if isinstance(batch, End):  # cancelled, or the connection lost
                raise batch.error or CallCancelledError(f"{self.name}: the call was cancelled")
        except asyncio.CancelledError:
            await inv.cancel()
            raise
        out = batch[0]
        _print_output(out, prefix=False)
        if not out.ok:
            raise out.value
        return out.value

    @aio_method
    async def spawn(self, *args: Any, **kwargs: Any) -> FunctionCall:
        """Start the function on a worker without waiting; returns a ``FunctionCall``."""
        inv = await self._invocation("spawn")
        inv._forget()  # outputs stay on the control plane
        writer = PayloadWriter()
        where = add_input(writer, 0, args, kwargs)
        await inv.submit([[0, *where]], writer.frames(), total=1)
        return FunctionCall(inv.call_id)

    @aio_method
    async def spawn_map(
        self, *iterables: Iterable[Any], kwargs: dict[str, Any] | None = None
    ) -> FunctionCall:
        """Start the function on every input without waiting for results; returns one
        ``FunctionCall`` whose ``.get(index=i)`` and ``.iter()`` give them later."""
        inv = await self._invocation("spawn")
        inv._forget()
        inv.start_feeding(_zip_inputs(iterables, kwargs))
        await inv.wait_fed()
        if inv.feed_error is not None:
            raise inv.feed_error
        return FunctionCall(inv.call_id)

    # --- maps --------------------------------------------------------------------------

    @property
    def map(self) -> _MapMethod:
        """``f.map(*iterables, kwargs={}, order_outputs=True, return_exceptions=False)``:
        a lazy iterator of results, streamed as they finish; ``f.map.aio(...)`` is its async
        twin (``async for``, or ``await`` for the list)."""
        return _MapMethod(self, _zip_inputs, star=False)

    @property
    def starmap(self) -> _MapMethod:
        """Like ``map``, each input being a tuple of positional arguments."""
        return _MapMethod(self, _star_inputs, star=True)

    @property
    def for_each(self) -> _ForEachMethod:
        """``f.for_each(*iterables, kwargs={}, ignore_exceptions=False)``: run the function
        on every input and wait; results are discarded. ``f.for_each.aio(...)`` awaits."""
        return _ForEachMethod(self)

    # --- the pool's settings and state -------------------------------------------------

    @aio_method
    async def update_autoscaler(
        self,
        *,
        min_containers: int | None = None,
        max_containers: int | None = None,
        buffer_containers: int | None = None,
        scaledown_window: float | None = None,
    ) -> dict[str, Any]:
        """Change the pool's autoscaler settings now; unspecified ones keep their value.
        Returns the effective settings."""
        client = await get_client()
        changes = {
            "min_containers": min_containers,
            "max_containers": max_containers,
            "buffer_containers": buffer_containers,
            "scaledown_window": scaledown_window,
        }
        msg = protocol.UpdateAutoscaler(0, await self._pool_id(client), changes)
        value, _ = await client.request(msg)
        return dict(value)

    @aio_method
    async def get_current_stats(self) -> FunctionStats:
        """Backlog, containers and running inputs of this function's pool, now."""
        client = await get_client()
        stats, _ = await client.request(protocol.GetStats(0, await self._pool_id(client)))
        return FunctionStats(
            backlog=stats["backlog"],
            num_total_runners=stats["num_total_runners"],
            num_running_inputs=stats["num_running_inputs"],
            input_headroom=stats["input_headroom"],
            containers=stats["containers"],
            workers=stats["workers"],
            status=stats["status"],
        )


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class _MapMethod:
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


class _ForEachMethod:
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
        for _ in MapResults(self._fn, _zip_inputs(iterables, kwargs), False, ignore_exceptions):
            pass

    async def aio(
        self,
        *iterables: Iterable[Any],
        kwargs: dict[str, Any] | None = None,
        ignore_exceptions: bool = False,
    ) -> None:
        results = MapResults(self._fn, _zip_inputs(iterables, kwargs), False, ignore_exceptions)
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
            _print_output(out, prefix=True)
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


class FunctionCall:
    """A handle on spawned work: ``get``, ``iter``, ``cancel``, ``num_inputs``; rebuild it in
    another process with ``FunctionCall.from_id(call_id)``."""

    def __init__(self, call_id: str) -> None:
        self.object_id = call_id

    def __repr__(self) -> str:
        return f"<nbscale.FunctionCall {self.object_id}>"

    async def _fetch(self, start: int, end: int | None, timeout: float | None) -> dict[str, Any]:
        client = await get_client()
        request = client.request(protocol.GetOutputs(0, self.object_id, start, end, timeout))
        if timeout is None:
            value, payload = await request
        else:  # honoured here too, should the control plane not answer in time
            try:
                value, payload = await asyncio.wait_for(request, timeout + _ANSWER_GRACE)
            except TimeoutError:
                raise TimeoutError(
                    f"function call {self.object_id}: no answer from {client.describe()} "
                    f"within its timeout of {timeout:g} s"
                ) from None
        items = value["items"]
        parts = split_payload(payload, [i[OUT_WHERE] for i in items])
        value["outputs"] = [
            decode(item, data, bufs, value["function"], value["timeout"])
            for item, (data, bufs) in zip(items, parts, strict=False)
        ]
        return value  # type: ignore[no-any-return]

    @aio_method
    async def get(self, timeout: float | None = None, *, index: int = 0) -> Any:
        """The result of input ``index``, waiting up to ``timeout`` seconds (None: forever).
        Raises ``TimeoutError`` if it is not ready in time, or the input's own exception."""
        value = await self._fetch(index, index + 1, timeout)
        if value["outputs"]:
            out = value["outputs"][0]
            _print_output(out, prefix=False)
            if not out.ok:
                raise out.value
            return out.value
        if value["cancelled"]:
            raise CallCancelledError(f"function call {self.object_id} was cancelled")
        raise TimeoutError(f"function call {self.object_id}: input {index} not done in {timeout} s")

    @property
    def iter(self) -> _CallIter:
        """``call.iter(start=0, end=None)``: the results in input order, each as soon as it
        and those before it are done; ``call.iter.aio(...)`` is its async twin."""
        return _CallIter(self)

    async def iter_on_loop(self, start: int = 0, end: int | None = None) -> AsyncIterator[Any]:
        if end is None:
            end = await self._num_inputs()
        for chunk_start in range(start, end, 64):
            value = await self._fetch(chunk_start, min(end, chunk_start + 64), None)
            if (
                value["cancelled"]
                and len(value["outputs"]) < min(end, chunk_start + 64) - chunk_start
            ):
                raise CallCancelledError(f"function call {self.object_id} was cancelled")
            for out in value["outputs"]:
                _print_output(out, prefix=True)
                if not out.ok:
                    raise out.value
                yield out.value

    async def _num_inputs(self) -> int:
        value = await self._fetch(0, 0, 0)
        return int(value["total"] if value["total"] is not None else value["submitted"])

    @aio_method
    async def num_inputs(self) -> int:
        """How many inputs the call has."""
        return await self._num_inputs()

    @aio_method
    async def cancel(self) -> None:
        """Cancel the call's pending inputs and stop its running ones."""
        client = await get_client()
        await client.request(protocol.CancelCall(0, self.object_id))

    @aio_classmethod
    async def from_id(cls: type[FunctionCall], call_id: str) -> FunctionCall:  # type: ignore[misc]
        """The ``FunctionCall`` with this id (raises ``NotFoundError`` if there is none)."""
        call = cls(call_id)
        await call._fetch(0, 0, 0)
        return call


async def _anext(agen: AsyncIterator[Any]) -> Any:
    return await agen.__anext__()


class _CallIter:
    def __init__(self, call: FunctionCall) -> None:
        self._call = call

    def __call__(self, *, start: int = 0, end: int | None = None) -> Iterator[Any]:
        agen = self._call.iter_on_loop(start, end)
        lt = get_loop()
        while True:
            try:
                yield lt.run(_anext(agen))
            except StopAsyncIteration:
                return

    async def aio(self, *, start: int = 0, end: int | None = None) -> AsyncIterator[Any]:
        agen = self._call.iter_on_loop(start, end)
        lt = get_loop()
        while True:
            try:
                yield await lt.run_aio(_anext(agen))
            except StopAsyncIteration:
                return
