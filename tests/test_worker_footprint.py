"""A worker imports only what its first input needs: its start is on the path of every cold
call (the zygote's for forked workers, each container's for Docker ones). Over a Unix socket
it never loads pyzmq, nor the client's messages (only nested calls need them), and it loads
pynvml only where NVIDIA's driver library is.

Real processes: a fresh interpreter importing the runtime, and this process's embedded
control plane with a forked worker and a spawned one.
"""

from __future__ import annotations

import json
import sys

import pytest
from conftest import fresh_python_stdout

import nbscale
from nbscale_runtime import nvml

# Loaded only when needed: ZeroMQ for tcp:// workers, the client's messages for nested calls.
_DEFERRED = ("zmq", "nbscale_runtime.client_messages")

app = nbscale.App("test-worker-footprint")


@app.function(max_containers=1, scaledown_window=60)
def deferred_modules_loaded() -> list[str]:
    return [name for name in _DEFERRED if name in sys.modules]


def test_the_runtime_imports_no_zeromq_nor_client_messages() -> None:
    code = (
        "import json, sys\n"
        "import nbscale_runtime.worker, nbscale_runtime.zygote\n"
        f"print(json.dumps([m for m in {_DEFERRED!r} + ('pynvml',) if m in sys.modules]))\n"
    )
    out = fresh_python_stdout(code)
    loaded = set(json.loads(out))
    assert not loaded & set(_DEFERRED)
    # The zygote imports pynvml for its workers exactly where NVML can open.
    assert ("pynvml" in loaded) == nvml.library_present()


@pytest.mark.parametrize("zygote", ["on", "off"])
def test_a_worker_on_a_unix_socket_runs_without_them(fresh_plane, zygote: str) -> None:
    fresh_plane(NBSCALE_PROCESS_ZYGOTE=zygote)
    assert deferred_modules_loaded.remote() == []
    assert nbscale.status()["worker_endpoint"].startswith("unix://")


def test_a_message_of_the_client_decodes_where_none_was_loaded() -> None:
    code = (
        "import sys\n"
        "from nbscale_runtime import protocol\n"
        "print('nbscale_runtime.client_messages' in sys.modules)\n"
        "msg, _ = protocol.decode([b'[\"ping\",7]'])\n"
        "assert isinstance(msg, protocol.Ping) and msg.rid == 7, msg\n"
    )
    out = fresh_python_stdout(code)
    assert out.split() == ["False"]  # loaded by the decode itself
