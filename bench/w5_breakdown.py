"""Where W5's time goes: timestamps across the calling process and its first worker.

``python bench/w5_breakdown.py [--runs 5] [--server | --docker]`` runs W5
(``app.function(max_containers=2)(noop).remote(1)`` from nothing, process launcher) in
fresh subprocesses and prints, for
each step, the median of its time since the call began (milliseconds). The calling process
wraps the control plane's and the launcher's steps; the worker gets a ``sitecustomize`` on
its path (through ``PYTHONPATH``, which workers inherit) that notes its steps in a file.
Wall-clock time (``time.time``) is shared by both processes; the wrappers add microseconds.
``--server``: the first call of fresh kernels (``NBSCALE_CONNECTION_FILE``) to one Jupyter
server's control plane, whose zygote is warm, then the same with ``process_zygote`` off.
``--docker``: W5 with the Docker launcher; the launcher's steps and the docker SDK's calls
are timed in the calling process (the SDK is imported before the call), the worker's own
steps are not (its container does not see the ``sitecustomize``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap

HERE = os.path.dirname(os.path.abspath(__file__))

# The worker's side, imported by ``site`` at the end of its start (after the .pth files).
SITECUSTOMIZE = textwrap.dedent(
    """
    import os, sys, time
    _path = os.environ.get("W5_PROBE_FILE")
    if _path and "nbscale_runtime" in " ".join(sys.orig_argv):
        def _note(step, _f=open(_path, "a")):
            _f.write(f"{time.time()!r} worker: {step}\\n"); _f.flush()
        _note("interpreter up, site done (sitecustomize)")
        import nbscale_runtime.worker as _w
        from nbscale_runtime import intake as _i, sending as _s
        _note("nbscale_runtime.worker imported")
        _init, _run, _load, _accept, _flush0 = (_w.Worker.__init__, _w.Worker.run,
            _w.Worker._load_function, _i.accept_inputs, _s.flush)
        def __init__(self, cfg):
            _note("config read; connecting"); _init(self, cfg); _note("connected")
        def run(self):
            _note("sending register"); return _run(self)
        def _load_function(self, msg, payload):
            _note("function received"); _load(self, msg, payload); _note("function loaded")
        def _accept_inputs(w, msg, payload):
            _note("inputs received"); _accept(w, msg, payload)
        def _flush(w):
            if w.done: _note("sending outputs")
            _flush0(w)
        _w.Worker.__init__, _w.Worker.run, _w.Worker._load_function = __init__, run, _load_function
        _i.accept_inputs, _s.flush = _accept_inputs, _flush
    """
)

# The calling process's side: one W5 with its steps noted.
CALLER = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, {here!r})
    import nbscale, workloads
    from nbscale_server import control_plane, worker_events
    from nbscale_server.launchers import process
    _f = open(os.environ["W5_PROBE_FILE"], "a")
    def note(step):
        _f.write(f"{{time.time()!r}} caller: {{step}}\\n"); _f.flush()
    def wrap(cls, name, before, after=None):
        original = getattr(cls, name)
        def wrapper(*a, **k):
            note(before); r = original(*a, **k)
            if after: note(after)
            return r
        setattr(cls, name, wrapper)
    def wrap_async(cls, name, before, after):
        original = getattr(cls, name)
        async def wrapper(*a, **k):
            note(before); r = await original(*a, **k); note(after); return r
        setattr(cls, name, wrapper)
    CP = control_plane.ControlPlane
    wrap(CP, "__init__", "control plane: building", "control plane: built")
    wrap_async(CP, "start", "control plane: binding", "control plane: started")
    wrap(process.ProcessLauncher, "start", "launcher: spawning worker", "launcher: spawned")
    wrap(worker_events.WorkerEvents, "on_register", "control plane: register received")
    if os.environ.get("NBSCALE_LAUNCHER") == "docker":
        import cloudpickle, docker
        from nbscale import _image_build
        from nbscale_server.launchers import docker as docker_launcher, selection
        cloudpickle.register_pickle_by_value(workloads)  # containers lack the bench's modules
        wrap(selection, "probe_docker", "launcher: probing Docker", "launcher: probed")
        wrap(docker_launcher.DockerLauncher, "__init__", "launcher: starting", "launcher: started")
        wrap(_image_build, "build", "client: image check", "client: image found")
        for name in {docker_calls!r}:
            wrap(docker.APIClient, name, "docker: " + name, "docker: " + name + " done")
    note("call begins")
    app = nbscale.App("bench")
    assert app.function(max_containers=2)(workloads.noop).remote(1) == 1
    note("result back")
    """
)


# The docker SDK's calls timed in ``--docker`` (the first of each in the call).
DOCKER_CALLS = (
    "ping",
    "containers",
    "networks",
    "create_network",
    "inspect_network",
    "inspect_image",
    "info",
    "create_container",
    "start",
)


def one_run(probe_dir: str, launcher: str = "process") -> list[tuple[str, float]]:
    fd, path = tempfile.mkstemp(prefix="w5-probe-")
    os.close(fd)
    env = dict(os.environ, W5_PROBE_FILE=path, NBSCALE_LAUNCHER=launcher, NBSCALE_PROGRESS="off")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [probe_dir, env.get("PYTHONPATH")]))
    code = CALLER.format(here=HERE, docker_calls=DOCKER_CALLS)
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)
    with open(path) as f:
        rows = [line.rstrip("\n").split(" ", 1) for line in f]
    os.unlink(path)
    stamps = sorted((float(t), step) for t, step in rows)
    begin = next(t for t, step in stamps if step == "caller: call begins")
    return [(step, (t - begin) * 1000) for t, step in stamps]


# A kernel's first call to a Jupyter server's control plane (it and its zygote already up).
KERNEL = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {here!r})
    import nbscale, workloads
    start = time.perf_counter()
    assert nbscale.App("bench").function(max_containers=2)(workloads.noop).remote(1) == 1
    print(time.perf_counter() - start)
    """
)


def server_runs(runs: int, zygote: bool) -> list[float]:
    """``runs`` fresh kernels' first calls to one ``jupyter server``'s control plane."""
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
    from pathlib import Path

    from jupyter_process import JupyterProcess

    with tempfile.TemporaryDirectory(prefix="nbscale-w5-") as tmp:
        config = {"NbScale": {"launcher": "process", "process_zygote": zygote}}
        server = JupyterProcess(Path(tmp), ["jupyter", "server"], config, "nbscale/api/status")
        try:
            [connection] = (Path(tmp) / "runtime").glob("nbscale-*.json")
            env = dict(os.environ, NBSCALE_CONNECTION_FILE=str(connection))
            code = KERNEL.format(here=HERE)
            seconds = []
            for _ in range(runs):
                out = subprocess.run(
                    [sys.executable, "-c", code],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                seconds.append(float(out.stdout.split()[-1]))
            return seconds
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--server",
        action="store_true",
        help="instead: fresh kernels' first calls to a Jupyter server's control plane, "
        "with its zygote and without",
    )
    parser.add_argument(
        "--docker",
        action="store_true",
        help="W5 with the Docker launcher: the launcher's and the docker SDK's steps (the "
        "worker's own steps are not seen inside its container)",
    )
    args = parser.parse_args()
    if args.server:
        for zygote in (True, False):
            seconds = server_runs(args.runs, zygote)
            print(
                f"first call of a kernel, server's control plane, process_zygote={zygote}: "
                f"median {statistics.median(seconds) * 1000:.1f} ms "
                f"({', '.join(f'{s * 1000:.1f}' for s in seconds)})"
            )
        return
    with tempfile.TemporaryDirectory() as probe_dir:
        with open(os.path.join(probe_dir, "sitecustomize.py"), "w") as f:
            f.write(SITECUSTOMIZE)
        runs = [
            one_run(probe_dir, "docker" if args.docker else "process") for _ in range(args.runs)
        ]
    steps: dict[str, list[float]] = {}
    for run in runs:
        seen: set[str] = set()
        for step, ms in run:
            if step not in seen:  # the first time each step happens
                seen.add(step)
                steps.setdefault(step, []).append(ms)
    rows = sorted(steps.items(), key=lambda item: statistics.median(item[1]))
    previous = 0.0
    print(f"{'step':58} {'ms since call':>13} {'delta':>7}")
    for step, values in rows:
        median = statistics.median(values)
        print(f"{step:58} {median:13.1f} {median - previous:7.1f}")
        previous = median
    print(json.dumps({"runs": runs}), file=sys.stderr)


if __name__ == "__main__":
    main()
