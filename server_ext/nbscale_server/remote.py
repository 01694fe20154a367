"""Workers beyond this process's file system: the address they reach the control plane at,
and the directory they share with it.

- Workers that cannot share the control plane's private directory (containers, Slurm jobs,
  Kubernetes Pods; local processes with the tcp transport) dial its worker socket
  over TCP, always with CurveZMQ and the per-worker allow-list (``security.py``). The
  operator chooses the address (``worker_address``: an IP, a host name or an interface name
  such as ``ib0``; ``bind_host`` is its deprecated old name); without one it is the
  launcher's own (the Docker network's gateway) or loopback. Every interface (``0.0.0.0``,
  ``::``) is refused unless ``allow_all_interfaces`` says so.
- A worker's keys reach it in its config file, mode 0600, in a directory of mode 0700 that
  the nodes see (``shared_dir``, by default under the home directory, which clusters share);
  the job itself only names the file's path.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import socket
from typing import Any

import psutil

from .launchers.owner import owner_alive, owner_tag

LOOPBACK = "127.0.0.1"
_ALL_INTERFACES = {"0.0.0.0", "::", "*"}
_OWNER_FILE = "owner.json"


class WorkerAddressError(ValueError):
    """Raised for a ``worker_address`` the control plane cannot or must not listen on."""


def resolve_worker_address(address: str, allow_all_interfaces: bool = False) -> str:
    """The numeric IP to bind remote workers' socket to, for an IP, a host name or a
    network interface's name; raises :class:`WorkerAddressError` saying what to do."""
    text = address.strip().removeprefix("[").removesuffix("]")
    if not text:
        raise WorkerAddressError("worker_address is empty: give an IP, host or interface name")
    if text in _ALL_INTERFACES:
        if not allow_all_interfaces:
            raise WorkerAddressError(
                f"worker_address {address!r} would accept workers on every network interface "
                "of this host; name the cluster's interface or address instead (e.g. "
                "c.NbScale.worker_address = 'ib0'), or set allow_all_interfaces to True "
                "(NBSCALE_ALLOW_ALL_INTERFACES=1) if that is what you mean"
            )
        return "::" if text == "::" else "0.0.0.0"
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(text))
    interfaces = psutil.net_if_addrs()
    if text in interfaces:
        for family in (socket.AF_INET, socket.AF_INET6):
            for addr in interfaces[text]:
                if addr.family == family:
                    return addr.address.split("%")[0]
        raise WorkerAddressError(f"network interface {text!r} has no IP address")
    try:
        infos = socket.getaddrinfo(text, None, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise WorkerAddressError(
            f"worker_address {address!r} is neither an IP address, a network interface of "
            f"this host ({', '.join(sorted(interfaces))}) nor a host name it can resolve "
            f"({exc})"
        ) from None
    return str(infos[0][4][0])


def dial_host(bind_ip: str) -> str:
    """The host part of the endpoint workers dial for a socket bound to ``bind_ip``: every
    interface means this host's own address."""
    if bind_ip in _ALL_INTERFACES:
        bind_ip = _outward_ip()
    return f"[{bind_ip}]" if ":" in bind_ip else bind_ip


def _outward_ip() -> str:
    """This host's address on its default route (not the 127.0.1.1 that Debian's
    /etc/hosts gives the host name): connecting a UDP socket sends nothing."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.254.254.254", 9))
            return str(probe.getsockname()[0])
        except OSError:
            return socket.gethostbyname(socket.gethostname())


def bind_worker_socket(sock: Any, bind_ip: str, port: int | None = None) -> str:
    """Bind the ZeroMQ worker socket to ``port`` (default: a random one) of ``bind_ip``;
    returns the endpoint workers dial."""
    if ":" in bind_ip:
        sock.ipv6 = True
    host = f"[{bind_ip}]" if ":" in bind_ip and bind_ip != "::" else bind_ip
    where = f"tcp://{'*' if bind_ip in _ALL_INTERFACES else host}"
    if port is None:
        port = sock.bind_to_random_port(where)
    else:
        sock.bind(f"{where}:{port}")
    return f"tcp://{dial_host(bind_ip)}:{port}"


def default_shared_dir() -> str:
    """Where remote workers' files go unless ``shared_dir`` says otherwise: under the home
    directory, which cluster nodes mount."""
    return os.path.join(os.path.expanduser("~"), ".nbscale", "jobs")


def make_job_dir(shared_dir: str, server_id: str) -> str:
    """A new directory of this control plane's in ``shared_dir``, mode 0700, recording its
    owner (host and process) so a later control plane can remove it if this one dies."""
    os.makedirs(shared_dir, mode=0o700, exist_ok=True)
    path = os.path.join(shared_dir, server_id)
    os.mkdir(path, mode=0o700)
    os.chmod(path, 0o700)
    with open(os.path.join(path, _OWNER_FILE), "w") as f:
        json.dump({"host": socket.gethostname(), "owner": owner_tag()}, f)
    return path


def remove_orphan_job_dirs(shared_dir: str) -> list[str]:
    """Remove the job directories that dead control planes of this host left behind;
    returns their server ids."""
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(shared_dir):
            try:
                with open(os.path.join(entry.path, _OWNER_FILE)) as f:
                    owner = json.load(f)
            except (OSError, ValueError):
                continue
            if owner.get("host") == socket.gethostname() and not owner_alive(owner.get("owner")):
                shutil.rmtree(entry.path, ignore_errors=True)
                removed.append(entry.name)
    return removed
