"""Client settings: ``nbscale.config(key=...)`` at run time, over ``NBSCALE_<KEY>`` in the
environment, over the config file, over defaults.

The config file is ``$NBSCALE_CONFIG_FILE``, else ``~/.config/nbscale/config.json`` (a JSON
object with the same keys, lower case). A bad value is an ``InvalidError`` naming the key.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from .exceptions import InvalidError


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    parse: Any
    help: str


def _optional_int(value: Any) -> int | None:
    return None if value in (None, "", "none", "None") else int(value)


def _flag(value: Any) -> bool:
    text = str(value).strip().lower()
    if text not in ("1", "true", "yes", "on", "0", "false", "no", "off", ""):
        raise ValueError("expected true or false (1/0, yes/no)")
    return text in ("1", "true", "yes", "on")


def _choice(*allowed: str) -> Any:
    def parse(value: Any) -> str:
        if str(value) not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return str(value)

    return parse


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in [
        Setting("connect_timeout", 10.0, float, "Seconds to wait for the control plane."),
        Setting(
            "max_workers",
            None,
            _optional_int,
            "Most workers the embedded control plane runs at once (default: CPU count).",
        ),
        Setting(
            "worker_transport",
            "ipc",
            _choice("ipc", "tcp"),
            "How local workers reach the embedded control plane: ipc (a Unix socket in a "
            "private directory) or tcp (CurveZMQ on loopback).",
        ),
        Setting("heartbeat_interval", 1.0, float, "Seconds between worker heartbeats."),
        Setting("heartbeat_timeout", 15.0, float, "Seconds of silence before a worker is lost."),
        Setting("python", None, str, "Interpreter for local worker processes (default: this one)."),
        Setting("max_inputs_in_flight_per_map", 1000, int, "Inputs in flight per .map() call."),
        Setting("max_pending_inputs", 2000, int, "Pending inputs per function."),
        Setting("max_total_inputs", 25000, int, "Pending + running inputs per function."),
        Setting("max_pending_spawn_inputs", 1_000_000, int, "Pending spawned inputs per function."),
        Setting(
            "progress",
            "auto",
            _choice("auto", "widget", "text", "off"),
            "How a .map() shows its progress: widget (live, under the notebook cell), text "
            "(a bar on stderr), off, or auto (widget in a Jupyter kernel, text when stderr is "
            "a terminal, else off).",
        ),
        Setting(
            "launcher",
            "auto",
            _choice("auto", "process", "docker", "slurm"),
            "What runs workers: process (local subprocesses), docker (containers), slurm (one "
            "Slurm batch job each), or auto (docker when a Docker engine answers, else "
            "process).",
        ),
        Setting(
            "docker_network",
            "bridge",
            _choice("bridge", "host"),
            "Docker workers' network: bridge (a network of the control plane's own) or host "
            "(shares this machine's network; starts faster).",
        ),
        Setting(
            "base_image",
            "nbscale/base:bookworm",
            str,
            "The base of Image.debian_slim() and Image.from_kernel() (scripts/docker-setup "
            "builds the default one offline).",
        ),
        # --- workers on other hosts (Slurm): nbscale_server.remote reads these ---
        Setting(
            "worker_address",
            "127.0.0.1",
            str,
            "Where Slurm workers reach the control plane: an IP, host or interface name "
            "(e.g. ib0) of this host; 0.0.0.0 only with allow_all_interfaces.",
        ),
        Setting(
            "allow_all_interfaces",
            False,
            _flag,
            "Let worker_address be 0.0.0.0 or :: (every interface; CurveZMQ still applies).",
        ),
        Setting(
            "shared_dir",
            None,
            str,
            "A directory every node sees, for Slurm workers' 0600 config files and job "
            "output (default: ~/.nbscale/jobs).",
        ),
        Setting("slurm_partition", None, str, "Slurm partition of worker jobs (--partition)."),
        Setting("slurm_account", None, str, "Slurm account of worker jobs (--account)."),
        Setting("slurm_qos", None, str, "Slurm QOS of worker jobs (--qos)."),
        Setting("slurm_time", None, str, "Walltime of worker jobs (--time), e.g. 4:00:00."),
        Setting(
            "slurm_gpu_types",
            None,
            str,
            "Modal GPU names as the cluster's gres types, e.g. A100=a100,H100=h100 (default: "
            "the name in lower case; gpu='any' asks for --gres=gpu:N).",
        ),
        Setting("slurm_sbatch_args", None, str, "More sbatch arguments, e.g. '--constraint=ib'."),
        Setting(
            "slurm_drain_seconds",
            120,
            int,
            "Seconds before its walltime a worker job is told to drain (--signal=B:TERM@N).",
        ),
    ]
}


def _file_values() -> dict[str, Any]:
    path = os.environ.get("NBSCALE_CONFIG_FILE") or os.path.expanduser(
        "~/.config/nbscale/config.json"
    )
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        try:
            return dict(json.load(f))
        except ValueError as exc:
            raise InvalidError(f"{path} is not valid JSON: {exc}") from None


_runtime: dict[str, Any] = {}  # set with nbscale.config(...), over everything else


def get(name: str) -> Any:
    setting = SETTINGS[name]
    if name in _runtime:
        return _runtime[name]
    env = os.environ.get(f"NBSCALE_{name.upper()}")
    if env is not None:
        raw, source = env, f"NBSCALE_{name.upper()}"
    else:
        values = _file_values()
        if name not in values:
            return setting.default
        raw, source = values[name], "the config file"
    try:
        return setting.parse(raw)
    except (TypeError, ValueError) as exc:
        raise InvalidError(f"bad value {raw!r} for {name} (from {source}): {exc}") from None


def config(**settings: Any) -> dict[str, Any]:
    """Set client settings for this process, over the environment and the config file:
    ``nbscale.config(progress="text")``; ``None`` drops a setting back to its usual source.
    Returns every setting's value now. The embedded control plane's settings apply to the
    next one started (after ``nbscale.shutdown()``)."""
    for name, value in settings.items():
        setting = SETTINGS.get(name)
        if setting is None:
            raise InvalidError(f"no setting {name!r}; the settings are: {', '.join(SETTINGS)}")
        if value is None:
            _runtime.pop(name, None)
            continue
        try:
            _runtime[name] = setting.parse(value)
        except (TypeError, ValueError) as exc:
            raise InvalidError(f"bad value {value!r} for {name}: {exc}") from None
    return {name: get(name) for name in SETTINGS}


def control_plane_config() -> Any:
    from nbscale_server.control_plane import ControlPlaneConfig
    from nbscale_server.limits import Limits
    from nbscale_server.remote import SETTING_NAMES, RemoteWorkers

    try:
        remote = RemoteWorkers.from_settings({name: get(name) for name in SETTING_NAMES})
    except ValueError as exc:
        raise InvalidError(f"bad Slurm or remote-worker setting: {exc}") from None
    limits = Limits(
        max_pending_inputs=get("max_pending_inputs"),
        max_total_inputs=get("max_total_inputs"),
        max_inputs_in_flight_per_map=get("max_inputs_in_flight_per_map"),
        max_pending_spawn_inputs=get("max_pending_spawn_inputs"),
    )
    return ControlPlaneConfig(
        limits=limits,
        max_workers_total=get("max_workers"),
        heartbeat_interval=get("heartbeat_interval"),
        heartbeat_timeout=get("heartbeat_timeout"),
        worker_transport=get("worker_transport"),
        python=get("python"),
        launcher=get("launcher"),
        docker_network=get("docker_network"),
        remote=remote,
    )
