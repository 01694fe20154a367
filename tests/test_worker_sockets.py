"""Sockets of one worker's own (Docker workers with ``docker_transport="ipc"``): a connection
on one may speak only for its worker, the socket is its owner's alone, and it goes with its
worker; an engine that cannot share this kernel is refused, saying why. Real sockets, no
container (``test_docker_ipc.py`` has the containers)."""

from __future__ import annotations

import asyncio
import os
import stat
import struct
from pathlib import Path

import pytest

from nbscale_server.launchers.base import WorkerSpec
from nbscale_server.launchers.docker_spec import (
    SOCKET_IN_CONTAINER,
    host_config_options,
    shared_kernel_problem,
    shared_kernel_refusal,
)
from nbscale_server.stream_channel import StreamChannel

LINUX = {"OperatingSystem": "Debian GNU/Linux 12 (bookworm)", "KernelVersion": "6.1.0-9"}


def frames(*parts: bytes) -> bytes:
    return struct.pack(f"<I{len(parts)}Q", len(parts), *map(len, parts)) + b"".join(parts)


async def dropped(path: str, identity: bytes) -> bool:
    """Whether the channel drops a connection to ``path`` that names itself ``identity``
    and sends one message (else it stays open, and is closed here)."""
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(frames(identity) + frames(b"hello"))
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(1), timeout=1.0) == b""
    except TimeoutError:
        return False
    finally:
        writer.close()


def test_a_workers_own_socket_speaks_only_for_that_worker(tmp_path: Path) -> None:
    async def main() -> list[list[bytes]]:
        got: list[list[bytes]] = []
        channel = StreamChannel(str(tmp_path / "workers"), lambda f: got.append(list(f)))
        own = str(tmp_path / "wk-a.sock")
        channel.listen(own, "wk-a")
        try:
            assert stat.S_IMODE(os.stat(own).st_mode) == 0o600
            for identity in (b"wk-a", b"wk-a:pulse", b"wk-a:client"):
                assert not await dropped(own, identity)
            for impostor in (b"wk-b", b"wk-b:pulse", b"wk-ab", b"wk-ab:client", b"", b":pulse"):
                assert await dropped(own, impostor), impostor
            # the control plane's own socket (in its 0700 directory) names anyone, as before
            assert not await dropped(str(tmp_path / "workers"), b"wk-b")
            channel.unlisten("wk-a")
            assert not os.path.exists(own)
            with pytest.raises(OSError):
                await asyncio.open_unix_connection(own)
        finally:
            channel.close()
        assert not os.listdir(tmp_path)
        return got

    got = asyncio.run(main())
    senders = [message[0] for message in got]
    assert senders == [b"wk-a", b"wk-a:pulse", b"wk-a:client", b"wk-b"]
    assert all(message[1:] == [b"hello"] for message in got)


def test_a_socket_that_cannot_be_made_raises(tmp_path: Path) -> None:
    async def main() -> None:
        channel = StreamChannel(str(tmp_path / "workers"), lambda f: None)
        try:
            with pytest.raises(OSError):
                channel.listen(str(tmp_path / "no-such-dir" / "wk-a.sock"), "wk-a")
        finally:
            channel.close()

    asyncio.run(main())


def test_the_socket_is_mounted_where_the_worker_dials_it() -> None:
    spec = WorkerSpec("wk-a", "pl-1", "/p/wk-a.json", socket_path="/p/wk-a.sock")
    binds = host_config_options(spec, "bridge", [])["binds"]
    assert binds["/p/wk-a.sock"] == {"bind": SOCKET_IN_CONTAINER, "mode": "rw"}
    assert "/p" not in binds  # the socket alone: never the control plane's directory
    plain = WorkerSpec("wk-a", "pl-1", "/p/wk-a.json")
    assert SOCKET_IN_CONTAINER not in str(host_config_options(plain, "bridge", [])["binds"])


@pytest.mark.parametrize(
    ("info", "address", "problem"),
    [
        (LINUX, "unix:///var/run/docker.sock", None),
        (LINUX, "tcp://10.0.0.5:2376", "reached at tcp://10.0.0.5:2376"),
        (LINUX, "ssh://me@gpu-box", "may run on another machine"),
        ({**LINUX, "OperatingSystem": "Docker Desktop"}, "unix:///x.sock", "virtual machine"),
        ({**LINUX, "KernelVersion": "6.6.12-linuxkit"}, "unix:///x.sock", "another kernel"),
    ],
)
def test_only_an_engine_on_this_kernel_may_share_its_memory(
    info: dict[str, str], address: str, problem: str | None
) -> None:
    found = shared_kernel_problem(info, address, "6.1.0-9")
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found
        refusal = shared_kernel_refusal(found)
        assert refusal.startswith("docker_transport='ipc' needs a Docker engine on this")
        assert "NBSCALE_DOCKER_TRANSPORT=tcp" in refusal
