"""``Function``: Modal's invocation API over nbscale's control plane (its maps are in
``_map_results.py``, the handle on spawned work in ``_function_call.py``)."""

from __future__ import annotations

import asyncio
import inspect
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nbscale_runtime import protocol
from nbscale_server.options import FunctionOptions

from . import _nested
from ._aio import aio_method
from ._client import Client, get_client
from ._fingerprint import fingerprint, frozen, same
from ._function_call import FunctionCall
from ._function_images import BuildOutput, build_called_images, options_with_image, worker_secrets
from ._generators import RemoteGenMethod
from ._image import Image
from ._loop import blocked_caller, loop_running
from ._map import Invocation
from ._map_results import ForEachMethod, Inputs, MapMethod, star_inputs, zip_inputs
from ._options import check_image, function_options
from ._outcomes import code_files_of, print_output
from ._pickling import pickle_function
from ._progress import CallProgress
from ._remote import SingleCall
from ._secret import Secret, secrets_setting
from ._spawner import Parent, SpawnMethod, spawner
from ._tracebacks import hidden, install
from .exceptions import InvalidError

if TYPE_CHECKING:
    from ._app import App


@dataclass(frozen=True)
class FunctionStats:
    """A snapshot of a function's pool, as ``Function.get_current_stats()`` returns it."""

    backlog: int  # inputs waiting for a worker
    num_total_runners: int  # containers (workers) waiting for resources, starting or running
    num_running_inputs: int
    input_headroom: int  # free input slots on running workers
    containers: dict[str, int] = field(default_factory=dict)  # by state
    # one dict per worker: left out of the repr, where it buried the pool's figures
    workers: list[dict[str, Any]] = field(default_factory=list, repr=False)
    status: str = ""


class Function:
    """A function that runs on an autoscaled pool of workers. Create it with
    ``@app.function(...)``; call it with ``.remote``, ``.map``, ``.spawn``, ...
    (and ``.local`` to run it here)."""

    @classmethod
    def from_name(
        cls, app_name: str, name: str, *, environment_name: str | None = None, client: Any = None
    ) -> Function:
        """The function ``name`` of the deployed app ``app_name`` (``app.deploy()``,
        ``nbscale deploy``): call it with ``.remote``, ``.map``, ``.spawn``, ... without its
        source. ``NotFoundError`` when no such app or function is deployed."""
        from ._deploy import function_from_name

        return function_from_name(app_name, name)

    def __init__(
        self,
        raw: Callable[..., Any],
        name: str,
        options: FunctionOptions,
        image: Image | None = None,
        app: App | None = None,
        secrets: tuple[Secret, ...] = (),
    ) -> None:
        self.raw_f = raw
        self.name = name
        self.pool_label = name  # the pool's name (a class's methods share their object's)
        self.deployed_app = ""  # the deployed app it was looked up in: its pool is the app's
        self.is_generator = inspect.isgeneratorfunction(raw) or inspect.isasyncgenfunction(raw)
        self._prefix: tuple[Any, ...] = ()  # before each input's arguments (a method's name)
        self.options = options
        self.image = image  # built into the tag ``options.image`` when Docker runs workers
        self.app = app  # its ``app.run()`` scopes this function's pools and spawned calls
        self.secrets = secrets  # sent at registration; their digest is in its pool's id
        self._pools: dict[str, str] = {}  # function id -> pool id, per client
        self._client: Client | None = None
        self._code_files: dict[str, str] | None = None
        self._pickled: tuple[tuple[Any, ...], tuple[bytes, str]] | None = None  # see _pickle
        self._sent_id: str | None = None  # the id its caller knew it by (on a worker)

    def __getstate__(self) -> dict[str, Any]:
        # A Function used inside another remote function travels without its connection
        # (and without its app, whose run is this process's).
        # Its id too, so that a nested call finds the pool its caller registered.
        return {
            "raw_f": self.raw_f,
            "name": self.name,
            "options": self.options,
            "image": self.image,
            "secrets": self.secrets,
            "function_id": _nested.id_to_send(self, lambda: self._pickle()[1]),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["raw_f"], state["name"], state["options"], state["image"], None, state["secrets"]
        )
        self._sent_id = _nested.id_received(state.get("function_id"))

    def __repr__(self) -> str:
        return f"<nbscale.Function {self.name}>"

    def local(self, *args: Any, **kwargs: Any) -> Any:
        """Run the function in this process, as a plain call."""
        result = self.raw_f(*args, **kwargs)
        if inspect.iscoroutine(result):
            return asyncio.run(result) if not loop_running() else result
        return result

    def get_raw_f(self) -> Callable[..., Any]:
        """The function as it was written, before the decorator (Modal's name)."""
        return self.raw_f

    def with_options(self, **settings: Any) -> Function:
        """A variant of this function with other settings, and a pool of its own."""
        return self._with_settings(settings, variant=True)

    def with_concurrency(self, *, max_inputs: int, target_inputs: int | None = None) -> Function:
        """A variant whose workers run up to ``max_inputs`` inputs at once, with a pool of
        its own (``@nbscale.concurrent`` as a call, as Modal's ``with_concurrency``)."""
        settings = {"max_inputs": max_inputs, "target_inputs": target_inputs}
        return self._with_settings(settings, variant=True)

    def _with_settings(self, settings: dict[str, Any], *, variant: bool = False) -> Function:
        """This function with ``settings`` changed; a ``variant`` gets a pool of its own
        even where only its autoscaler settings differ."""
        image = check_image(settings.pop("image", self.image))
        secrets = secrets_setting(settings, self.secrets, f"{self.name}.with_options")
        options = function_options(self.raw_f, settings, self.options, variant=variant)
        return Function(self.raw_f, self.name, options, image, self.app, secrets)

    # --- the pool ----------------------------------------------------------------------

    def _pickle(self) -> tuple[bytes, str]:
        """The function's pickle and content id, reused while nothing it holds can differ."""
        fp = fingerprint(self.raw_f)
        if fp is not None and self._pickled is not None and same(fp, self._pickled[0]):
            return self._pickled[1]
        with _nested.pickling(self):
            pickled = pickle_function(self.raw_f)
        if self._sent_id is not None:
            pickled = (pickled[0], self._sent_id)
        self._pickled = (fp, pickled) if fp is not None and frozen(fp) else None
        return pickled

    async def _pool_id(self, client: Client, on_build: BuildOutput | None = None) -> str:
        """The function's pool on ``client``'s control plane, registered on first use (for
        Docker workers, after its image is built; ``on_build`` gets the build's steps)."""
        # before the code is pickled: the images it carries then say their tags
        await build_called_images(self.raw_f, client, on_build)
        data, function_id = self._pickle()
        if self._client is not client:
            self._pools.clear()
            self._client = client
        pool_id = self._pools.get(function_id)
        if pool_id is None:
            options = await self._wire_options(client, on_build)
            msg = protocol.RegisterFunction(
                0,
                function_id,
                self.pool_label,
                options.to_wire(),
                [p for p in sys.path if p],
                [secret.to_wire() for secret in worker_secrets(self, client, on_build)],
                self.deployed_app,
            )
            value, _ = await client.request(msg, [data])
            pool_id = value["pool_id"]
            self._pools[function_id] = pool_id
        return pool_id

    async def _wire_options(
        self, client: Client, on_build: BuildOutput | None = None
    ) -> FunctionOptions:
        """The options as the control plane takes them (``_function_images``)."""
        return await options_with_image(self, client, on_build)

    async def _pool_in_use(self, on_build: BuildOutput | None = None) -> tuple[Client, str]:
        """The client and the function's pool on it, for a call about to be made."""
        install()  # a notebook's tracebacks leave nbscale's frames out
        client = await get_client()
        pool_id = await self._pool_id(client, on_build)
        run = self.app.running if self.app is not None else None
        if run is not None:
            run.used_pool(pool_id)
        return client, pool_id

    async def _invocation(
        self,
        kind: str,
        order_outputs: bool = True,
        progress: CallProgress | None = None,
        on_build: BuildOutput | None = None,
        factory: type[Invocation] = Invocation,
    ) -> Invocation:
        client, pool_id = await self._pool_in_use(on_build)
        if self._code_files is None:
            self._code_files = code_files_of(self.raw_f)
        return factory(
            client,
            pool_id,
            kind,
            self.name,
            self.options.timeout,
            order_outputs,
            code_files=self._code_files,
            progress=progress,
        )

    def _inputs(self, inputs: Inputs) -> Inputs:
        """The inputs as the worker takes them (a method's name first)."""
        prefix = self._prefix
        return inputs if not prefix else ((prefix + args, kwargs) for args, kwargs in inputs)

    def _refuse_generator(self, how: str) -> None:
        if self.is_generator:
            raise InvalidError(
                f"{self.name} is a generator function: {how} would not stream what it yields; "
                f"iterate {self.name}.remote_gen(...) instead"
            )

    # --- single calls ------------------------------------------------------------------

    @aio_method
    async def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Run the function once on a worker and return its result (or raise its error)."""
        __tracebackhide__ = hidden()  # IPython leaves this frame out of tracebacks
        blocked = blocked_caller()  # a blocking call's thread, answered at once
        self._refuse_generator(".remote()")
        client, pool_id = await self._pool_in_use()
        if self._code_files is None:
            self._code_files = code_files_of(self.raw_f)
        call = SingleCall(
            client, pool_id, self.name, self.options.timeout, self._code_files, blocked
        )
        out = await call.run(self._prefix + args, kwargs)
        if call.answered:  # the blocked thread has its result (or error) already
            return None
        print_output(out, prefix=False)
        if not out.ok:
            raise out.value
        return out.value

    @SpawnMethod
    async def spawn(self, *args: Any, **kwargs: Any) -> FunctionCall:
        """Start the function on a worker without waiting; returns a ``FunctionCall``."""
        self._refuse_generator(".spawn()")
        client, pool_id = await self._pool_in_use()
        call_id = await spawner(client).spawn(pool_id, self.name, self._prefix + args, kwargs)
        return self._spawned(call_id)

    async def _spawn_many(
        self, parent: Parent, inputs: list[tuple[tuple[Any, ...], dict[str, Any]]]
    ) -> list[FunctionCall | BaseException]:
        """``.spawn.aio`` calls gathered on their caller's loop (``SpawnMethod``), made here
        together: each one's ``FunctionCall``, or what failed it."""
        client, pool_id = await self._pool_in_use()
        inputs = [(self._prefix + args, kwargs) for args, kwargs in inputs]
        made = await spawner(client).spawn_many(pool_id, self.name, parent, inputs)
        return [one if isinstance(one, BaseException) else self._spawned(one) for one in made]

    @aio_method
    async def spawn_map(
        self, *iterables: Iterable[Any], kwargs: dict[str, Any] | None = None
    ) -> FunctionCall:
        """Start the function on every input without waiting for results; returns one
        ``FunctionCall`` whose ``.get(index=i)`` and ``.iter()`` give them later."""
        __tracebackhide__ = hidden()  # IPython leaves this frame out of tracebacks
        self._refuse_generator(".spawn_map()")
        inv = await self._invocation("spawn")
        inv._forget()
        inv.start_feeding(self._inputs(zip_inputs(iterables, kwargs)))
        await inv.wait_fed()
        if inv.feed_error is not None:
            raise inv.feed_error
        return self._spawned(inv.call_id)

    def _spawned(self, call_id: str) -> FunctionCall:
        run = self.app.running if self.app is not None else None
        if run is not None:
            run.spawned_call(call_id)
        return FunctionCall(call_id)

    @property
    def remote_gen(self) -> RemoteGenMethod:
        """``f.remote_gen(*args, **kwargs)``: run a generator function on a worker and
        iterate its values as it yields them; ``async for`` over ``f.remote_gen.aio(...)``."""
        return RemoteGenMethod(self)

    # --- maps --------------------------------------------------------------------------

    @property
    def map(self) -> MapMethod:
        """``f.map(*iterables, kwargs={}, order_outputs=True, return_exceptions=False)``:
        a lazy iterator of results, streamed as they finish; ``f.map.aio(...)`` is its async
        twin (``async for``, or ``await`` for the list)."""
        return MapMethod(self, zip_inputs, star=False)

    @property
    def starmap(self) -> MapMethod:
        """Like ``map``, each input being a tuple of positional arguments."""
        return MapMethod(self, star_inputs, star=True)

    @property
    def for_each(self) -> ForEachMethod:
        """``f.for_each(*iterables, kwargs={}, ignore_exceptions=False)``: run the function
        on every input and wait; results are discarded. ``f.for_each.aio(...)`` awaits."""
        return ForEachMethod(self)

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
