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

import math
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from ..gpus import GpuError, parse_gpu

COMMENT_PREFIX = "nbscale"
_TIME = re.compile(r"(\d+-)?\d+(:\d+){0,2}|UNLIMITED|INFINITE", re.IGNORECASE)
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_NAME_MAX = 64
# What a function may set in slurm={...}; gpu_types is the cluster's, so config only.
FUNCTION_KEYS = ("partition", "account", "qos", "time", "sbatch_args", "drain_seconds")


@dataclass(frozen=True, slots=True)
class SlurmOptions:
    """Where and how long worker jobs run; ``None`` leaves a choice to the cluster."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str | None = None  # walltime, in Slurm's formats: "30", "4:00:00", "1-12"
    gpu_types: Mapping[str, str] = field(default_factory=dict)  # Modal name -> gres type
    sbatch_args: tuple[str, ...] = ()  # e.g. ("--constraint=ib", "--reservation=lab")
    drain_seconds: int = 120  # the worker is asked to drain this long before its walltime

    def __post_init__(self) -> None:
        for name in ("partition", "account", "qos"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"slurm {name} must be a non-empty string, got {value!r}")
        if self.time is not None and (
            not isinstance(self.time, str) or not _TIME.fullmatch(self.time)
        ):
            raise ValueError(
                f"slurm time {self.time!r} is not a Slurm walltime: use minutes ('30'), "
                "'HH:MM:SS', or 'D-HH[:MM[:SS]]'"
            )
        drain = self.drain_seconds
        if isinstance(drain, bool) or not isinstance(drain, int) or not 0 <= drain <= 65535:
            raise ValueError(f"slurm drain_seconds must be an int in 0..65535, got {drain!r}")
        if isinstance(self.sbatch_args, str) or not all(
            isinstance(a, str) for a in self.sbatch_args
        ):
            raise ValueError(f"slurm sbatch_args must be a list of strings: {self.sbatch_args!r}")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.gpu_types.items()):
            raise ValueError(f"slurm gpu_types must map names to names: {self.gpu_types!r}")

    def updated(self, overrides: Mapping[str, Any] | None) -> SlurmOptions:
        """These options with a function's ``slurm={...}`` over them."""
        if not overrides:
            return self
        changes = check_function_options(overrides)
        return replace(self, **changes)


def check_function_options(overrides: Any) -> dict[str, Any]:
    """A function's ``slurm={...}``, checked: raises ``ValueError`` naming a bad key or
    value. Returns it with ``sbatch_args`` as a tuple."""
    if not isinstance(overrides, Mapping):
        raise ValueError(f"slurm= takes a dict such as {{'partition': 'gpu'}}, got {overrides!r}")
    unknown = sorted(set(overrides) - set(FUNCTION_KEYS))
    if unknown:
        raise ValueError(
            f"slurm= has no key {unknown[0]!r}; the keys are: {', '.join(FUNCTION_KEYS)}"
        )
    changes = {k: v for k, v in overrides.items() if v is not None}
    if "sbatch_args" in changes and not isinstance(changes["sbatch_args"], str):
        changes["sbatch_args"] = tuple(changes["sbatch_args"])
    SlurmOptions(**changes)  # validates
    return changes


def options_from_settings(values: Mapping[str, Any]) -> SlurmOptions:
    """:class:`SlurmOptions` from flat settings named ``slurm_<field>`` (unset ones: None)."""
    known = {f.name for f in fields(SlurmOptions)}
    kwargs = {
        name: values[f"slurm_{name}"] for name in known if values.get(f"slurm_{name}") is not None
    }
    if isinstance(kwargs.get("sbatch_args"), str):
        kwargs["sbatch_args"] = tuple(shlex.split(kwargs["sbatch_args"]))
    elif "sbatch_args" in kwargs:
        kwargs["sbatch_args"] = tuple(kwargs["sbatch_args"])
    if isinstance(kwargs.get("gpu_types"), str):
        kwargs["gpu_types"] = parse_gpu_types(kwargs["gpu_types"])
    return SlurmOptions(**kwargs)


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
    options: Mapping[str, Any],
    slurm: SlurmOptions,
    name: str,
    comment: JobComment,
    log_path: str,
) -> list[str]:
    """``sbatch`` arguments for one worker; the batch script goes to its standard input.
    ``options``: the function's (cpu, memory, gpu, slurm). Raises ``ValueError`` for a
    request Slurm cannot be asked."""
    slurm = slurm.updated(options.get("slurm"))
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
    cpu = options.get("cpu")
    if cpu:
        args.append(f"--cpus-per-task={math.ceil(float(cpu))}")
    memory = options.get("memory")
    if memory:
        args.append(f"--mem={int(memory)}M")
    gres = gres_for(options.get("gpu"), slurm.gpu_types)
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
