"""A worker as a Slurm batch job, on paper: the options, the ``sbatch`` command line, the
batch script and the job's comment. Pure: no Slurm command runs here.

One job per worker, as ipyparallel and dask-jobqueue do it:

- ``--job-name=nbscale-<function>`` and a ``--comment`` carrying the worker, pool and control
  plane ids plus the owner process (host, pid and start time), so ``squeue`` finds a
  control plane's own jobs, and those a dead one left;
- resources from the function: ``cpu=`` → ``--cpus-per-task`` (rounded up), ``memory=`` →
  ``--mem``, ``gpu=`` in Modal's syntax → ``--gres=gpu[:type]:N`` (types through a
  configurable map, by default Modal's name in lower case: ``"A100:2"`` → ``gpu:a100:2``);
- where and how long from :class:`SlurmOptions` (the function's ``slurm={...}`` over the
  control plane's settings): ``--partition``, ``--account``, ``--qos``, ``--time``, extra
  ``sbatch`` arguments, and ``--signal=B:TERM@<drain_seconds>`` so a worker stops taking
  inputs and drains before its walltime;
- ``--no-requeue``: a lost worker is replaced by the control plane, never restarted by Slurm
  under an identity whose keys were revoked.

The batch script only ``exec``s the worker with the configured Python and the path of its
config file (keys stay in that 0600 file: never in the script, argv or the environment, all
of which ``scontrol`` shows); ``exec`` makes the worker the batch step's process, so the
walltime signal reaches it.
"""

from __future__ import annotations

import dataclasses
import math
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..gpus import GpuError, parse_gpu
from ..options import SLURM_KEYS, FunctionOptions, slurm_option
from ..settings import SETTINGS

COMMENT_PREFIX = "nbscale"
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_NAME_MAX = 64


@dataclass(frozen=True, slots=True)
class SlurmOptions:
    """Where and how long worker jobs run; ``None`` leaves a choice to the cluster. The
    control plane's ``slurm_*`` settings (:meth:`from_settings`), with a function's
    ``slurm={...}`` over them (:meth:`for_function`)."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str | None = None  # walltime, in Slurm's formats: "30", "4:00:00", "1-12"
    gpu_types: Mapping[str, str] = field(default_factory=dict)  # Modal name -> gres type
    sbatch_args: tuple[str, ...] = ()  # e.g. ("--constraint=ib", "--reservation=lab")
    drain_seconds: int = SETTINGS["slurm_drain_seconds"].default  # before the walltime

    @classmethod
    def from_settings(cls, settings: Any) -> SlurmOptions:
        """From an object with the ``slurm_*`` settings as attributes (``ControlPlaneConfig``);
        raises ValueError naming a bad setting."""
        values: dict[str, Any] = {}
        for key in SLURM_KEYS:
            value = getattr(settings, f"slurm_{key}", None)
            if value is not None:
                try:
                    values[key] = slurm_option(key, value)
                except ValueError as exc:
                    raise ValueError(f"setting slurm_{key}: {exc}") from None
        gpu_types = getattr(settings, "slurm_gpu_types", None)
        if gpu_types:
            try:
                values["gpu_types"] = parse_gpu_types(gpu_types)
            except ValueError as exc:
                raise ValueError(f"setting slurm_gpu_types: {exc}") from None
        return cls(**values)

    def for_function(self, options: FunctionOptions) -> SlurmOptions:
        """These options with a function's over them; its ``sbatch_args`` come after these
        (sbatch takes an option's last value)."""
        changes: dict[str, Any] = {}
        for key in SLURM_KEYS:
            value = getattr(options, f"slurm_{key}")
            if value is not None:
                changes[key] = self.sbatch_args + value if key == "sbatch_args" else value
        return dataclasses.replace(self, **changes) if changes else self


def parse_gpu_types(text: str) -> dict[str, str]:
    """``"A100=a100,H100=h100"`` as a map from Modal's GPU names to the cluster's gres
    types."""
    mapping = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        name, sep, gres = pair.partition("=")
        if not sep or not name.strip() or not gres.strip():
            raise ValueError(f"gpu types take NAME=TYPE pairs separated by commas, got {pair!r}")
        mapping[name.strip()] = gres.strip()
    return mapping


def gres_for(gpu: Any, gpu_types: Mapping[str, str]) -> str | None:
    """The ``--gres`` value for a function's ``gpu=`` (None for no GPU). Slurm queues a job
    for one GPU type, so of a list of fallbacks the first is asked for."""
    try:
        requests = parse_gpu(gpu)
    except GpuError as exc:
        raise ValueError(str(exc)) from None
    if not requests:
        return None
    request = requests[0]
    if request.kind == "ANY":
        return f"gpu:{request.count}"
    types = {name.upper(): gres for name, gres in gpu_types.items()}
    kind = types.get(request.kind) or types.get(request.kind.rstrip("!+"))
    if kind is None:
        kind = request.kind.rstrip("!+").lower()
    return f"gpu:{kind}:{request.count}"


def job_name(pool_name: str) -> str:
    """``nbscale-<function>``, in the characters every Slurm tool shows plainly."""
    safe = _NAME_UNSAFE.sub("_", pool_name).strip("_") or "worker"
    return f"{COMMENT_PREFIX}-{safe}"[:_NAME_MAX]


@dataclass(frozen=True, slots=True)
class JobComment:
    """What a worker's job says about itself in ``--comment``."""

    server_id: str
    worker_id: str
    pool_id: str
    host: str
    owner: str  # "pid:start time" of the control plane process

    def __str__(self) -> str:
        return (
            f"{COMMENT_PREFIX};server={self.server_id};worker={self.worker_id};"
            f"pool={self.pool_id};host={self.host};owner={self.owner}"
        )

    @classmethod
    def parse(cls, text: str) -> JobComment | None:
        """The comment of an nbscale job, or None for anyone else's."""
        prefix, _, rest = text.strip().partition(";")
        if prefix != COMMENT_PREFIX:
            return None
        values = dict(part.partition("=")[::2] for part in rest.split(";"))
        try:
            return cls(
                values["server"], values["worker"], values["pool"], values["host"], values["owner"]
            )
        except KeyError:
            return None


def batch_script(python: str, config_path: str) -> str:
    """The job's script: the worker, and nothing secret (only its config file's path)."""
    command = shlex.join([python, "-m", "nbscale_runtime", "--config", config_path])
    return (
        f"#!/bin/sh\n# an nbscale worker (its keys are in the 0600 config file)\nexec {command}\n"
    )


def sbatch_command(
    options: FunctionOptions,
    slurm: SlurmOptions,
    name: str,
    comment: JobComment,
    log_path: str,
) -> list[str]:
    """``sbatch`` arguments for one worker of a function with ``options``; the batch script
    goes to its standard input. Raises ``ValueError`` for a request Slurm cannot be asked."""
    slurm = slurm.for_function(options)
    args = [
        "sbatch",
        "--parsable",
        f"--job-name={name}",
        f"--comment={comment}",
        f"--output={log_path}",
        "--nodes=1",
        "--ntasks=1",
        "--no-requeue",
        f"--signal=B:TERM@{slurm.drain_seconds}",
    ]
    if options.cpu:
        args.append(f"--cpus-per-task={math.ceil(options.cpu)}")
    if options.memory:
        args.append(f"--mem={options.memory}M")
    gres = gres_for(options.gpu, slurm.gpu_types)
    if gres:
        args.append(f"--gres={gres}")
    for flag in ("partition", "account", "qos", "time"):
        value = getattr(slurm, flag)
        if value is not None:
            args.append(f"--{flag}={value}")
    args.extend(slurm.sbatch_args)
    return args


def job_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment sbatch runs with, and so the job's (``--export=ALL``, Slurm's
    default): ``environ`` less what must not reach a worker: a kernel's connection file, and
    the ``SLURM_*`` variables of a job the control plane may itself run in."""
    env = {
        k: v
        for k, v in environ.items()
        if not (k.startswith("SLURM_") and k != "SLURM_CONF") and k != "NBSCALE_CONNECTION_FILE"
    }
    env["PYTHONUNBUFFERED"] = "1"
    return env
