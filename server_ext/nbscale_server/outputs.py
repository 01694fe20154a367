"""Outputs rows as the control plane rewrites them (pure: rows and bytes in, rows and bytes
out): repacking rows into one message, and keeping what earlier attempts of an input printed.

A retried input's earlier attempts printed things a user wants to see (the attempt that
failed is usually the one that explains why); the control plane keeps their text, each line
labelled with its attempt, and puts it before the final attempt's text in the row it
delivers.
"""

from __future__ import annotations

from typing import Any

from nbscale_runtime import protocol
from nbscale_runtime.packed import cut_results
from nbscale_runtime.protocol import (
    OUT_ATTEMPT,
    OUT_COUNT,
    OUT_DURATION,
    OUT_INDEX,
    OUT_SIZES,
    OUT_STDERR,
    OUT_STDOUT,
    OUT_WHERE,
)
from nbscale_runtime.serialization import pack

from .queue import InputRecord

# An output as stored or repacked: (outputs row, pickle bytes, buffers)
Entry = tuple[list[Any], Any, list[Any]]


def outputs_message(entries: list[Entry]) -> tuple[protocol.Outputs, list[Any]]:
    """An ``outputs`` message for ``(row, data, buffers)`` entries, their bytes repacked."""
    frames, addresses = pack([(data, bufs) for _, data, bufs in entries])
    items = []
    for (item, _, _), where in zip(entries, addresses, strict=True):
        row = list(item)
        row[OUT_WHERE] = where
        items.append(row)
    return protocol.Outputs(items), frames


def apart(entry: Entry) -> list[Entry]:
    """Each output of a run's row as an entry of its own, its bytes cut from the run's by
    their sizes or, packed, by their opcodes (never unpickled; a run's results have no
    buffers): how the store keeps a run's outputs, input by input. A row of one input is its
    own entry."""
    item, data, _ = entry
    count = item[OUT_COUNT] if len(item) > OUT_COUNT else 0
    if not count:
        return [entry]
    each = item[OUT_DURATION] / count
    entries: list[Entry] = []
    for k, cut in enumerate(cut_results(data, item[OUT_SIZES], count)):
        row = list(item)
        row[OUT_INDEX] += k
        row[OUT_WHERE] = (0, len(cut), 0)
        row[OUT_DURATION], row[OUT_COUNT], row[OUT_SIZES] = each, 0, []
        entries.append((row, cut, []))
    return entries


def labelled(text: str, attempt: int) -> str:
    """``text`` with each line begun by ``[attempt N] ``."""
    if not text:
        return ""
    lines = text.splitlines(keepends=True)
    body = "".join(f"[attempt {attempt}] {line}" for line in lines)
    return body if body.endswith("\n") else body + "\n"


def keep_printed(record: InputRecord, row: list[Any]) -> None:
    """An attempt of ``record`` failed and is retried: keep what it printed."""
    attempt = row[OUT_ATTEMPT]
    stdout, stderr = record.earlier_printed
    record.earlier_printed = (
        stdout + labelled(row[OUT_STDOUT], attempt),
        stderr + labelled(row[OUT_STDERR], attempt),
    )


def with_earlier_printed(record: InputRecord, row: list[Any]) -> list[Any]:
    """The final ``row`` of ``record``, its text after what earlier attempts printed."""
    stdout, stderr = record.earlier_printed
    if not stdout and not stderr:
        return row
    attempt = row[OUT_ATTEMPT]
    row = list(row)
    row[OUT_STDOUT] = stdout + labelled(row[OUT_STDOUT], attempt)
    row[OUT_STDERR] = stderr + labelled(row[OUT_STDERR], attempt)
    return row
