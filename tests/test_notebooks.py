"""The example notebooks, executed in a real kernel with nbclient, and their outputs checked."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"
WIDGET = "application/vnd.jupyter.widget-view+json"
VIEW = "application/vnd.nbscale.map+json"


def execute(name: str) -> list[Any]:
    """Run the notebook (in its own folder, as a user would) in under 30 s; its code cells."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    started = time.monotonic()
    client = NotebookClient(
        nb, timeout=60, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    client.execute()
    assert time.monotonic() - started < 30, f"{name} is too slow for an example"
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def text(cells: list[Any]) -> str:
    """Everything the cells printed or showed as text."""
    parts = []
    for cell in cells:
        for out in cell.outputs:
            parts.append(out.get("text", ""))
            parts.append(out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def summaries(cells: list[Any]) -> list[str]:
    """The summary lines maps left behind, as a viewer without nbscale's renderer (nbviewer,
    GitHub) shows them: their final HTML, as text."""
    return [
        re.sub(r"<[^>]+>", "", out.data["text/html"])
        for cell in cells
        for out in cell.outputs
        if VIEW in out.get("data", {}) and out.data[VIEW]["final"]
    ]


def views(cells: list[Any]) -> int:
    """Maps' views, each one output updated in place (no widget model to lose)."""
    return sum(VIEW in out.get("data", {}) for cell in cells for out in cell.outputs)


def test_getting_started():
    cells = execute("01-getting-started.ipynb")
    out = text(cells)
    assert re.search(r"workers: (process|docker) \(.+\)", out)  # which, and why
    assert "squares: " + str([x**2 for x in range(20)]) in out
    assert "sum of squares: 2470" in out
    assert "awaited: [0, 1, 4, 9, 16]" in out
    assert "with exceptions: [0, 1, Exception('ohno')]" in out
    assert "map: [11, 22, 33]" in out and "starmap: [3, 7]" in out and "kwargs: [40, 60]" in out
    assert "'max_containers': 2" in out and "'scaledown_window': 2" in out
    assert "spawned: [49, 64, 81]" in out and "from its id: 49" in out and "remote: 144" in out
    assert "pools: ['add', 'evaluate_model', 'my_func', 'simulate']" in out
    lines = summaries(cells)
    assert any(line.startswith("✔ evaluate_model: 20 inputs · 20 done in") for line in lines)
    assert any(line.startswith("✘ my_func: 3 inputs · 2 done · 1 failed") for line in lines)
    assert views(cells) == 8  # one per map
    assert sum(WIDGET in o.get("data", {}) for c in cells for o in c.outputs) == 1  # monitor


def test_cell_magics():
    cells = execute("02-cell-magics.ipynb")
    out = text(cells)
    assert "running in process" in out
    assert [o.data["text/plain"] for o in cells[2].outputs if "data" in o] == ["67.5"]
    assert "total, back in the notebook: 67.5" in out
    assert "mean: 6.75 | scratch came back: False" in out
    draws = re.search(r"draws: \[(.*)\]", out)
    assert draws is not None and len(draws.group(1).split(",")) == 8
    # the --map cell's pool is named after its notebook (nbclient's kernel: its pid) and cell
    assert any(
        re.match(r"✔ pid \d+ \[7\]: 8 inputs · 8 done", line) for line in summaries(cells)
    ), summaries(cells)
    [error] = [o for cell in cells for o in cell.outputs if o.output_type == "error"]
    assert error.ename == "ZeroDivisionError"
    traceback = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(error.traceback))
    assert "----> 4 ratios = [10 / v for v in values]" in traceback
    assert "nbscale embedded control plane · launcher" in out
    assert "max_containers=2" in out and "stopped pl-" in out


def test_gpu_example_runs_on_cpu_where_there_is_no_gpu():
    cells = execute("03-gpu.ipynb")
    out = text(cells)
    if "Running on CPU" in out:
        assert "devices: ['cpu']" in out
    else:
        assert "GPU(s) found" in out and "devices: ['cpu']" not in out
    assert re.search(r"traces: \[(\d+, ){5}\d+\]", out)
    assert cells[-1].outputs[-1].data["text/plain"] == "4.0"  # the %%nbscale cell's result


def test_parameter_sweep_plots_its_results():
    cells = execute("04-parameter-sweep.ipynb")
    out = text(cells)
    assert "48 combinations" in out
    best = re.search(r"best: degree=(\d) alpha=(\S+) mse=(\S+)", out)
    assert best is not None and 1 <= int(best.group(1)) <= 8 and float(best.group(3)) < 0.05
    assert any(line.startswith("✔ fit: 48 inputs · 48 done") for line in summaries(cells))
    pngs = [o for cell in cells for o in cell.outputs if "image/png" in o.get("data", {})]
    assert len(pngs) == 1


def test_model_loaded_once_per_container():
    cells = execute("05-model-per-container.ipynb")
    out = text(cells)
    accuracy = re.search(r"accuracy: (\S+)", out)
    assert accuracy is not None and float(accuracy.group(1)) > 0.9
    assert re.search(r"containers: [12], loads per container: \[1\]", out)
    sizes = re.search(r"batch sizes seen: \[(\d+)", out)
    assert sizes is not None and 1 < int(sizes.group(1)) <= 16
    assert "same labels: True" in out
