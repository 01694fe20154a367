"""Blocking calls inside a real IPython kernel, whose own event loop is running."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from jupyter_client.manager import start_new_kernel

pytestmark = pytest.mark.slow

CELL = """
import asyncio, nbscale
asyncio.get_running_loop()  # the kernel's loop is running in this cell
app = nbscale.App("kernel")

@app.function(max_containers=2)
def cube(x):
    print("cubing", x)
    return x ** 3

print("RESULT", list(cube.map(range(5))), cube.remote(3), cube.spawn(2).get(timeout=30))
"""

AWAIT_CELL = """
print("ASYNC", await cube.map.aio(range(3)), await cube.remote.aio(4))
"""


@pytest.fixture
def kernel() -> Iterator[object]:
    manager, client = start_new_kernel(kernel_name="python3")
    try:
        yield client
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def _run(client, code: str) -> tuple[str, list[str]]:
    stdout: list[str] = []
    errors: list[str] = []

    def on_output(msg):
        content = msg["content"]
        if msg["msg_type"] == "stream":
            stdout.append(content["text"])
        elif msg["msg_type"] == "error":
            errors.append("\n".join(content["traceback"]))

    reply = client.execute_interactive(code, timeout=90, output_hook=on_output)
    assert reply["content"]["status"] == "ok", errors
    return "".join(stdout), errors


def test_blocking_map_remote_and_spawn_work_in_a_running_kernel(kernel):
    out, errors = _run(kernel, CELL)
    assert not errors
    assert "RESULT [0, 1, 8, 27, 64] 27 8" in out
    assert "[2] cubing 2" in out  # each input's stdout, prefixed with its index


def test_top_level_await_of_the_aio_twins_in_a_kernel(kernel):
    _run(kernel, CELL)
    out, _errors = _run(kernel, AWAIT_CELL)
    assert "ASYNC [0, 1, 8] 64" in out
