"""Whether a worker can run what a caller pickled: a pure check of the versions both sides
report (the wire protocol, Python's minor version, cloudpickle's minor version)."""

from __future__ import annotations

from nbscale_runtime.protocol import PROTOCOL_VERSION


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def incompatibilities(
    protocol_version: int, python: str, cloudpickle: str, caller: dict[str, str]
) -> list[str]:
    """What keeps a worker with these versions from running ``caller``'s pickles (the
    versions its ``hello`` reported); empty when nothing does."""
    problems = []
    if protocol_version != PROTOCOL_VERSION:
        problems.append(f"protocol {protocol_version} != {PROTOCOL_VERSION}")
    if _minor(python) != _minor(caller["python"]):
        problems.append(f"Python {python} on the worker, {caller['python']} in the caller")
    if _minor(cloudpickle) != _minor(caller["cloudpickle"]):
        problems.append(
            f"cloudpickle {cloudpickle} on the worker, {caller['cloudpickle']} in the caller"
        )
    return problems
