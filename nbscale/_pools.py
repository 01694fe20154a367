"""Managing pools from a kernel (``%nbscale pools | scale | stop | logs``).

Pools are named by id (``pl-...``) or by function name. Every action is a wire request, so it
works the same with an embedded control plane and with the Jupyter server's.
"""

from __future__ import annotations

from typing import Any

from nbscale_runtime import protocol
from nbscale_server.models import PoolModel

from ._client import get_client
from ._loop import get_loop
from .exceptions import InvalidError, NotFoundError


async def _pools() -> list[PoolModel]:
    client = await get_client()
    value, _ = await client.request(protocol.GetStats(0, None))
    return list(value["pools"])


def pools() -> list[PoolModel]:
    """Every pool of the control plane this process uses."""
    return get_loop().run(_pools())


def find_pool(ref: str) -> PoolModel:
    """The pool with id ``ref``, or the one pool of the function named ``ref``."""
    found = pools()
    by_id = [p for p in found if p["id"] == ref]
    if by_id:
        return by_id[0]
    by_name = [p for p in found if p["function"] == ref]
    if len(by_name) == 1:
        return by_name[0]
    if by_name:
        ids = ", ".join(p["id"] for p in by_name)
        raise InvalidError(f"{ref} has {len(by_name)} pools ({ids}): name one by its id")
    raise NotFoundError(f"no pool {ref!r} (pools: {', '.join(p['id'] for p in found) or 'none'})")


async def _scale(pool_id: str, changes: dict[str, Any]) -> dict[str, Any]:
    client = await get_client()
    value, _ = await client.request(protocol.UpdateAutoscaler(0, pool_id, changes))
    return dict(value)


def scale(ref: str, **changes: int | float | None) -> dict[str, Any]:
    """Change a pool's autoscaler settings (``max_containers``, ``min_containers``,
    ``buffer_containers``, ``scaledown_window``; None keeps one). Returns the settings."""
    return get_loop().run(_scale(find_pool(ref)["id"], changes))


async def _request(msg: protocol.Message) -> Any:
    client = await get_client()
    value, _ = await client.request(msg)
    return value


def stop(ref: str | None = None) -> list[str]:
    """Stop one pool (or every pool): cancel its calls and stop its workers. Returns the
    ids of the pools stopped."""
    ids = [find_pool(ref)["id"]] if ref is not None else [p["id"] for p in pools()]
    for pool_id in ids:
        get_loop().run(_request(protocol.StopPool(0, pool_id)))
    return ids


def logs(ref: str, tail: int = 200) -> str:
    """The last output lines of a container (``wk-...``), or of every container running a
    call (``fc-...``), with the call's counts first."""
    if not ref.startswith("fc-"):
        model = get_loop().run(_request(protocol.GetLogs(0, ref, tail)))
        return str(model["logs"])
    call = get_loop().run(_request(protocol.GetCall(0, ref)))
    lines = [
        f"{call['id']} ({call['function']}, {call['kind']}): {call['done']} done, "
        f"{call['failed']} failed, {call['running']} running, {call['pending']} pending"
        + (", cancelled" if call["cancelled"] else "")
    ]
    workers = sorted({i["worker_id"] for i in call["inputs"] if i.get("worker_id")})
    for worker_id in workers:
        model = get_loop().run(_request(protocol.GetLogs(0, worker_id, tail)))
        lines += [f"--- {worker_id}", str(model["logs"]).rstrip()]
    return "\n".join(lines)
