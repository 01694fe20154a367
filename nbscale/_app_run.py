"""``with app.run():`` (and ``nbscale run``): a span of time that owns what an app's
functions start in it.

Entering it connects to the control plane. Leaving it stops the pools its functions used
in it (their calls, spawned ones too, are cancelled and their workers stop, as when a Modal
app run ends), unless the run is *detached*: then its spawned calls keep running on the
Jupyter server's control plane after this process ends, and their ids are printed, for
``FunctionCall.from_id(id).get()`` from anywhere later. A control plane embedded in this
process ends with it, so a detached run needs the server's.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

from nbscale_runtime import protocol

from ._client import Client, get_client, is_current
from ._loop import get_loop
from .exceptions import InvalidError, NotFoundError

if TYPE_CHECKING:
    from ._app import App

DETACH_NEEDS_SERVER = (
    "a detached run needs the Jupyter server's control plane, which outlives this process; "
    "this process embeds its own, which ends with it (start `jupyter lab` or `jupyter server` "
    "first: `nbscale run` finds it, and its kernels use it)"
)


class AppRun:
    """One run of an app: the pools its functions used and the calls they spawned."""

    def __init__(self, app: App, detach: bool = False) -> None:
        self.app = app
        self.detach = detach
        self.pools: set[str] = set()
        self.spawned: list[str] = []
        self._client: Client | None = None

    def __repr__(self) -> str:
        return f"<nbscale.AppRun {self.app.name}{' detached' if self.detach else ''}>"

    # --- what the app's functions report (on nbscale's loop) ---------------------------

    def used_pool(self, pool_id: str) -> None:
        self.pools.add(pool_id)

    def spawned_call(self, call_id: str) -> None:
        self.spawned.append(call_id)

    # --- the span ----------------------------------------------------------------------

    async def _start(self) -> None:
        apps = self.app.with_included()
        for app in apps:
            if app.running is not None:
                raise InvalidError(
                    f"app {app.name!r} is running already: a run cannot open inside another "
                    "(nbscale run runs the local entrypoint inside app.run() already)"
                )
        client = await get_client()
        if self.detach and client.mode != "server":
            raise InvalidError(DETACH_NEEDS_SERVER)
        self._client = client
        for app in apps:  # the functions of an included app are this run's too
            app.running = self

    async def _end(self) -> None:
        for app in self.app.with_included():
            if app.running is self:
                app.running = None
        client = self._client
        if client is None or not is_current(client) or self.detach:
            return
        for pool_id in sorted(self.pools):
            with contextlib.suppress(NotFoundError):  # the server forgot it
                await client.request(protocol.StopPool(0, pool_id))

    def _say_detached(self) -> None:
        if not self.detach:
            return
        n = len(self.spawned)
        if not n:
            print("nbscale: detached: this run spawned no calls", file=sys.stderr)
            return
        print(
            f"nbscale: detached: {n} spawned call{'s keep' if n > 1 else ' keeps'} running on the "
            f"Jupyter server's control plane: {', '.join(self.spawned)}\n"
            f'nbscale: get a result with nbscale.FunctionCall.from_id("{self.spawned[0]}")'
            ".get(); the sidebar shows their progress",
            file=sys.stderr,
        )

    def __enter__(self) -> App:
        get_loop().run(self._start())
        return self.app

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        get_loop().run(self._end())
        self._say_detached()

    async def __aenter__(self) -> App:
        await get_loop().run_aio(self._start())
        return self.app

    async def __aexit__(self, *exc_info: Any) -> None:
        await get_loop().run_aio(self._end())
        self._say_detached()


@contextlib.contextmanager
def enable_output(show_progress: bool = True) -> Iterator[None]:
    """Modal's ``with modal.enable_output():``, accepted as it is: nbscale shows progress
    already (the live widget in a notebook, a text bar on a terminal; ``NBSCALE_PROGRESS``
    chooses), so it changes nothing."""
    yield
