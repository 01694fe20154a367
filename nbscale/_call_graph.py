"""``FunctionCall.get_call_graph()``: a call's inputs and, under each, the calls its code
made on its worker, and theirs, as Modal's ``InputInfo`` tree.

The control plane records the parent input of every call made on a worker; this module
walks the graph from one call down. Like Modal's, it is best effort: a finished ``.map()``
or ``.remote()`` is remembered only among the latest finished calls, and one forgotten is
left out of the tree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nbscale_runtime import protocol

from ._client import Client
from .exceptions import NotFoundError


@dataclass(frozen=True)
class InputInfo:
    """One input of a call, with the inputs of the calls its code made (``children``).
    ``status``: pending, running, finished (its result went to its caller), done, failed
    or cancelled."""

    input_id: str  # "<function call id>#<index>"
    function_call_id: str
    index: int
    status: str
    function_name: str
    worker_id: str | None = None  # the worker running it, or that held it last
    children: list[InputInfo] = field(default_factory=list)


async def call_graph(client: Client, call_id: str) -> list[InputInfo]:
    """The inputs of ``call_id``, each with its descendants."""
    detail = await _detail(client, call_id)
    if detail is None:
        raise NotFoundError(f"no function call {call_id}")
    return await _inputs(client, detail)


async def _detail(client: Client, call_id: str) -> dict[str, Any] | None:
    try:
        first, _ = await client.request(protocol.GetCall(0, call_id, 0, 0))
        limit = max(1, int(first["submitted"]))
        value, _ = await client.request(protocol.GetCall(0, call_id, 0, limit))
    except NotFoundError:
        return None  # finished long ago, and forgotten
    return dict(value)


async def _inputs(client: Client, detail: dict[str, Any]) -> list[InputInfo]:
    below: dict[int, list[InputInfo]] = {}
    for child_id in detail.get("children", []):
        child = await _detail(client, child_id)
        if child is not None and child.get("parent"):
            below.setdefault(child["parent"]["index"], []).extend(await _inputs(client, child))
    return [
        InputInfo(
            input_id=f"{detail['id']}#{model['index']}",
            function_call_id=detail["id"],
            index=model["index"],
            status=model["status"],
            function_name=detail["function"],
            worker_id=model.get("worker_id") or None,
            children=below.get(model["index"], []),
        )
        for model in detail["inputs"]
    ]
