"""A function's options: one frozen ``FunctionOptions``, validated once, from the decorator
to the launcher.

``@app.function(...)`` builds it; it travels to the control plane in a versioned wire form
(``to_wire``/``from_wire``: a dict with ``version`` and every field, decoded strictly, so a
peer with another shape is refused instead of guessed at); the pool, the autoscaler and the
launchers read its attributes. The defaults live here (and the autoscaler's in
``AutoscalerSettings``), nowhere else.

Autoscaler settings are kept as given: None means "not said". The control plane can then
tell an explicit setting, which re-registering the function applies to its pool, from a
default, which leaves the pool's current setting (one made from the sidebar, say) alone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .autoscaler import AutoscalerSettings
from .gpus import GpuError, parse_gpu
from .queue import RetryPolicy
from .values import is_int, is_number

WIRE_VERSION = 4  # 2: the slurm_* options; 3: has_exit; 4: secrets and volumes
DEFAULT_TIMEOUT = 300.0  # seconds per attempt, as on Modal
MAX_TIMEOUT = 24 * 3600  # seconds, as on Modal
MIN_MEMORY = 6  # MiB: Docker's own minimum
AUTOSCALER_FIELDS = ("min_containers", "max_containers", "buffer_containers", "scaledown_window")
# What shapes a worker or what becomes of its inputs: the function's pool is one per value.
_WORKER_FIELDS = (
    "timeout",
    "retries",
    "max_inputs",
    "target_inputs",
    "cpu",
    "memory",
    "gpu",
    "image",
    "is_async",
    "slurm_partition",
    "slurm_account",
    "slurm_qos",
    "slurm_time",
    "slurm_sbatch_args",
    "slurm_drain_seconds",
    "secrets",
    "volumes",
)
# What a function may say about its Slurm jobs, as ``slurm={key: value}``; each is also a
# control plane setting, ``slurm_<key>``, which the function's value comes before.
SLURM_KEYS = ("partition", "account", "qos", "time", "sbatch_args", "drain_seconds")
_SLURM_TIME = re.compile(r"(\d+-)?\d+(:\d+){0,2}|UNLIMITED|INFINITE", re.IGNORECASE)
MAX_DRAIN_SECONDS = 65535  # sbatch's --signal takes at most this


def slurm_option(key: str, value: Any) -> Any:
    """A Slurm job option (``slurm={key: value}``, or the ``slurm_<key>`` setting), checked
    and normalised (``sbatch_args`` as a tuple; a string is split as a shell would); raises
    ValueError saying what is wrong."""
    if key in ("partition", "account", "qos"):
        if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value):
            raise ValueError(f"slurm {key} must be a name without spaces, got {value!r}")
        return value
    if key == "time":
        if not isinstance(value, str) or not _SLURM_TIME.fullmatch(value.strip()):
            raise ValueError(
                f"slurm time {value!r} is not a Slurm walltime: use minutes ('30'), "
                "'HH:MM:SS' or 'D-HH[:MM[:SS]]'"
            )
        return value.strip()
    if key == "sbatch_args":
        args = shlex.split(value) if isinstance(value, str) else value
        if not isinstance(args, (list, tuple)) or not all(isinstance(a, str) for a in args):
            raise ValueError(f"slurm sbatch_args must be a list of strings, got {value!r}")
        return tuple(args)
    if key == "drain_seconds":
        if not is_int(value) or not 0 <= value <= MAX_DRAIN_SECONDS:
            raise ValueError(
                f"slurm drain_seconds must be an int of seconds in 0..{MAX_DRAIN_SECONDS}, "
                f"got {value!r}"
            )
        return value
    raise ValueError(f"no Slurm option {key!r}; the options are: {', '.join(SLURM_KEYS)}")


def slurm_fields(slurm: object) -> dict[str, Any]:
    """The ``slurm_*`` fields of ``FunctionOptions`` for a function's ``slurm={...}`` (its
    None values leave a field as it is); raises ValueError naming a bad key or value."""
    if not isinstance(slurm, Mapping):
        raise ValueError(f"slurm= takes a dict such as {{'partition': 'gpu'}}, got {slurm!r}")
    unknown = sorted(set(slurm) - set(SLURM_KEYS))
    if unknown:
        raise ValueError(f"slurm= has no key {unknown[0]!r}; the keys are: {', '.join(SLURM_KEYS)}")
    return {f"slurm_{key}": value for key, value in slurm.items() if value is not None}


def _volumes(volumes: object) -> tuple[tuple[str, str], ...]:
    """``volumes`` as (path, name) pairs, each path once; raises ValueError."""
    if not isinstance(volumes, (list, tuple)):
        raise ValueError(f"volumes must be (path, name) pairs, got {volumes!r}")
    pairs: list[tuple[str, str]] = []
    for pair in volumes:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ValueError(f"volumes must be (path, name) pairs, got {pair!r}")
        path, name = pair
        if not isinstance(path, str) or not path.strip() or "\0" in path:
            raise ValueError(f"a volume's mount path must be a path, got {path!r}")
        if not isinstance(name, str) or not name:
            raise ValueError(f"a volume's name must be a string, got {name!r}")
        pairs.append((path, name))
    paths = [p.rstrip("/") or "/" for p, _ in pairs]
    twice = sorted({p for p in paths if paths.count(p) > 1})
    if twice:
        raise ValueError(f"two volumes are mounted at {twice[0]}")
    return tuple(sorted(pairs))


@dataclass(frozen=True, slots=True, kw_only=True)
class FunctionOptions:
    timeout: float = DEFAULT_TIMEOUT
    retries: RetryPolicy = field(default_factory=RetryPolicy)
    max_inputs: int = 1  # inputs one worker runs at once (``@nbscale.concurrent``)
    target_inputs: int | None = None  # what the autoscaler aims for per worker; None: max
    cpu: float | None = None  # cores (a Docker worker's limit, a Slurm job's request)
    memory: int | None = None  # MiB (a Docker worker's limit, a Slurm job's request)
    gpu: str | tuple[str, ...] | None = None  # Modal's syntax: "A100:2", or fallbacks
    image: str | None = None  # the worker image's tag; None for worker processes
    is_async: bool = False
    min_containers: int | None = None
    max_containers: int | None = None
    buffer_containers: int | None = None
    scaledown_window: float | None = None
    variant: bool = False  # made by ``with_options``: a pool of its own for these settings
    # an @app.cls class with @exit hooks: its stopping workers get ``exit_grace`` more
    has_exit: bool = False
    # A Slurm worker's job (``slurm={...}``); None: the control plane's slurm_* setting.
    slurm_partition: str | None = None
    slurm_account: str | None = None
    slurm_qos: str | None = None
    slurm_time: str | None = None  # walltime
    slurm_sbatch_args: tuple[str, ...] | None = None  # after the setting's
    slurm_drain_seconds: int | None = None  # drain this long before the walltime
    # A keyed digest of the environment ``secrets=`` give workers (the control plane's,
    # never the values): functions with other secrets never share a worker. None: none.
    secrets: str | None = None
    volumes: tuple[tuple[str, str], ...] = ()  # (path in the worker, volume name)

    def __post_init__(self) -> None:
        t = self.timeout
        if not is_number(t) or not 0 < t <= MAX_TIMEOUT:
            raise ValueError(
                f"timeout must be a number of seconds in (0, {MAX_TIMEOUT}], got {t!r}"
            )
        if not isinstance(self.retries, RetryPolicy):
            raise ValueError(f"retries must be a retry policy, got {self.retries!r}")
        if not is_int(self.max_inputs) or self.max_inputs < 1:
            raise ValueError(f"max_inputs must be an int >= 1, got {self.max_inputs!r}")
        target = self.target_inputs
        if target is not None and (not is_int(target) or not 1 <= target <= self.max_inputs):
            raise ValueError(
                f"target_inputs must be an int between 1 and max_inputs, got {target!r}"
            )
        if self.cpu is not None and (not is_number(self.cpu) or self.cpu <= 0):
            raise ValueError(f"cpu must be a number of cores > 0, got {self.cpu!r}")
        if self.memory is not None and not is_int(self.memory):
            raise ValueError(f"memory must be an int of MiB, got {self.memory!r}")
        if self.memory is not None and self.memory < MIN_MEMORY:
            raise ValueError(f"memory must be at least {MIN_MEMORY} MiB, got {self.memory}")
        if isinstance(self.gpu, list):  # a list of fallbacks, kept immutable
            object.__setattr__(self, "gpu", tuple(self.gpu))
        try:
            parse_gpu(self.gpu)
        except GpuError as exc:
            raise ValueError(str(exc)) from None
        if self.image is not None and (not isinstance(self.image, str) or not self.image):
            raise ValueError(f"image must be an image tag, got {self.image!r}")
        if not all(isinstance(v, bool) for v in (self.is_async, self.variant, self.has_exit)):
            raise ValueError("is_async, variant and has_exit must be booleans")
        if self.secrets is not None and (not isinstance(self.secrets, str) or not self.secrets):
            raise ValueError(f"secrets must be a digest, got {type(self.secrets).__name__}")
        object.__setattr__(self, "volumes", _volumes(self.volumes))
        for key in SLURM_KEYS:
            value = getattr(self, f"slurm_{key}")
            if value is not None:
                object.__setattr__(self, f"slurm_{key}", slurm_option(key, value))
        self.autoscaler_settings()  # raises ValueError for bad autoscaler settings

    # --- what the control plane reads -------------------------------------------------

    @property
    def slots_target(self) -> int:
        """The inputs per worker the autoscaler plans for."""
        return self.target_inputs or self.max_inputs

    def autoscaler_settings(self) -> AutoscalerSettings:
        """The autoscaler settings, defaults filled in for those not said."""
        return AutoscalerSettings().updated(self.explicit_autoscaler())

    def explicit_autoscaler(self) -> dict[str, Any]:
        """The autoscaler settings that were said (not None)."""
        said = {name: getattr(self, name) for name in AUTOSCALER_FIELDS}
        return {name: value for name, value in said.items() if value is not None}

    def pool_id(self, function_id: str, owner: str = "") -> str:
        """The id of the pool of this function with these options for this ``owner``
        (``owners.owner_key``): its code and what shapes its workers, not its autoscaler
        settings (registering it again with other settings changes its pool's), unless it
        is a ``with_options`` variant."""
        names = _WORKER_FIELDS + (AUTOSCALER_FIELDS if self.variant else ())
        wire = self.to_wire()
        parts = [function_id, {n: wire[n] for n in names}, self.variant, owner]
        key = json.dumps(parts, sort_keys=True)
        return "pl-" + hashlib.sha256(key.encode()).hexdigest()[:12]

    # --- the wire form ------------------------------------------------------------------

    def to_wire(self) -> dict[str, Any]:
        wire = {f.name: getattr(self, f.name) for f in fields(self)}
        wire["retries"] = dataclasses.asdict(self.retries)
        for name in ("gpu", "slurm_sbatch_args"):
            if isinstance(wire[name], tuple):
                wire[name] = list(wire[name])
        wire["volumes"] = [list(pair) for pair in self.volumes]
        return {"version": WIRE_VERSION, **wire}

    @classmethod
    def from_wire(cls, wire: object) -> FunctionOptions:
        """The options sent by ``to_wire``; raises ValueError for anything else."""
        if not isinstance(wire, dict):
            raise ValueError(f"function options must be a JSON object, got {type(wire).__name__}")
        if wire.get("version") != WIRE_VERSION:
            raise ValueError(
                f"function options of version {wire.get('version')!r}, this control plane "
                f"reads version {WIRE_VERSION}: upgrade nbscale on both sides"
            )
        values = {k: v for k, v in wire.items() if k != "version"}
        names = {f.name for f in fields(cls)}
        if set(values) != names:
            unknown, missing = sorted(set(values) - names), sorted(names - set(values))
            raise ValueError(f"function options: unknown {unknown}, missing {missing}")
        retries = values["retries"]
        retry_names = {f.name for f in fields(RetryPolicy)}
        if not isinstance(retries, dict) or set(retries) != retry_names:
            raise ValueError(f"function options: bad retries {retries!r}")
        return cls(**{**values, "retries": RetryPolicy(**retries)})
