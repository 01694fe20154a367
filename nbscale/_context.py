"""Which input runs here: ``nbscale.current_input_id()`` and ``current_function_call_id()``,
as in Modal. In a worker they read which input runs in this thread or asyncio task
(``nbscale_runtime.capture``); elsewhere they say None. (``is_local`` is in ``_owner.py``.)"""

from __future__ import annotations

from nbscale_runtime import capture


def current_input_id() -> str | None:
    """The id of the input running here (``in-...``, one per input of a call), or None
    outside a worker. Prefix log lines with it when inputs run concurrently."""
    current = capture.current_input()
    if current is None:
        return None
    call_id, index = current
    return f"in-{call_id.removeprefix('fc-')}-{index}"


def current_function_call_id() -> str | None:
    """The id of the call (``fc-...``) whose input runs here, or None outside a worker: the
    id ``FunctionCall.from_id`` takes."""
    current = capture.current_input()
    return None if current is None else current[0]
