"""Managing pools from a kernel (``%nbscale pools | scale | stop | logs``).

Pools are named by id (``pl-...``) or by function name. A name means one of this kernel's
own pools (``_owner.py``): another notebook's pool is reached by its id, or with
``all_pools``. Every action is a wire request, so it works the same with an embedded
control plane and with the Jupyter server's.
"""

from __future__ import annotations

from typing import Any

from nbscale_runtime import protocol
from nbscale_server.models import PoolModel

from ._client import get_client
from ._loop import get_loop
from ._owner import is_mine
from .exceptions import InvalidError, NotFoundError


async def _pools() -> list[PoolModel]:
    client = await get_client()
    value, _ = await client.request(protocol.GetStats(0, None))
    return list(value["pools"])


def pools(all_pools: bool = False) -> list[PoolModel]:
    """This kernel's (or process's) pools, or every pool of its control plane."""
    found = get_loop().run(_pools())
    return found if all_pools else [p for p in found if is_mine(p["owner"])]


def owners_text(pools: list[PoolModel]) -> str:
    """``sweep.ipynb (2), train.py (1)``: whose pools these are, and how many each."""
    names: dict[str, int] = {}
    for p in pools:
        names[p["owner"]["name"]] = names.get(p["owner"]["name"], 0) + 1
    return ", ".join(f"{name} ({n})" for name, n in names.items())


def find_pool(ref: str, all_pools: bool = False) -> PoolModel:
    """The pool with id ``ref``, or this kernel's one pool of the function named ``ref``
    (any kernel's with ``all_pools``)."""
    found = get_loop().run(_pools())
    by_id = [p for p in found if p["id"] == ref]
    if by_id:
        return by_id[0]
    named = [p for p in found if p["function"] == ref]
    by_name = named if all_pools else [p for p in named if is_mine(p["owner"])]
    if len(by_name) == 1:
        return by_name[0]
    if by_name:
        ids = ", ".join(f"{p['id']} ({p['owner']['name']})" for p in by_name)
        raise InvalidError(f"{ref} has {len(by_name)} pools ({ids}): name one by its id")
    if named:
        raise NotFoundError(
            f"no pool {ref!r} of this kernel; pools of others have that name "
            f"({owners_text(named)}): name one by its id"
        )
    mine = [p["id"] for p in found if all_pools or is_mine(p["owner"])]
    raise NotFoundError(f"no pool {ref!r} (pools: {', '.join(mine) or 'none'})")


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


def stop_pools(pool_ids: list[str]) -> list[str]:
    """Stop these pools: cancel their calls and stop their workers. Returns their ids."""
    for pool_id in pool_ids:
        get_loop().run(_request(protocol.StopPool(0, pool_id)))
    return pool_ids


def stop(ref: str | None = None) -> list[str]:
    """Stop one pool (by id, or this kernel's by function name), or every pool of this
    kernel: cancel their calls and stop their workers. Returns the ids of the pools
    stopped. Other kernels' pools are stopped only by id, or by ``stop_pools``."""
    ids = [find_pool(ref)["id"]] if ref is not None else [p["id"] for p in pools()]
    return stop_pools(ids)


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
