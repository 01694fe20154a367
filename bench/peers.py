"""One adapter per peer, each running the workloads on 2 worker processes with default settings.

Constructing an adapter imports its library; `start` brings the workers up; `map` and `call`
run a workload function; `stop` shuts everything down. `cold_start` (W5) goes from nothing
running to one result.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import workloads

Fn = Callable[[Any], Any]
WORKERS = 2
SLURM_SETUP_DIR = "/var/lib/nbscale-slurm"  # where scripts/slurm-setup writes its cluster


class Peer(ABC):
    """A pool of `WORKERS` worker processes."""

    @abstractmethod
    def start(self) -> None:
        """Start the pool or cluster."""

    @abstractmethod
    def map(self, fn: Fn, items: list[Any]) -> list[Any]:
        """Run `fn` on every item through the peer's map, results in order."""

    @abstractmethod
    def call(self, fn: Fn, x: Any) -> Any:
        """Run `fn(x)` as one remote call and wait for its result."""

    @abstractmethod
    def stop(self) -> None:
        """Shut the pool or cluster down."""

    def cold_start(self) -> None:
        """Start from nothing running and get one result (W5)."""
        self.start()
        self.call(workloads.noop, 1)


class ProcessPool(Peer):
    """`concurrent.futures.ProcessPoolExecutor`: `executor.map` with its default chunksize."""

    def start(self) -> None:
        self._executor = ProcessPoolExecutor(WORKERS)

    def map(self, fn: Fn, items: list[Any]) -> list[Any]:
        return list(self._executor.map(fn, items))

    def call(self, fn: Fn, x: Any) -> Any:
        return self._executor.submit(fn, x).result()

    def stop(self) -> None:
        self._executor.shutdown()


class Joblib(Peer):
    """joblib `Parallel(n_jobs=2)`: loky backend, automatic batching, reusable executor."""

    def __init__(self) -> None:
        import joblib
        from joblib.externals import loky

        self._joblib = joblib
        self._loky = loky

    def start(self) -> None:
        """Nothing to do: loky starts its reusable executor on the first `Parallel` call."""

    def map(self, fn: Fn, items: list[Any]) -> list[Any]:
        delayed = self._joblib.delayed(fn)
        return list(self._joblib.Parallel(n_jobs=WORKERS)(delayed(x) for x in items))

    def call(self, fn: Fn, x: Any) -> Any:
        return self.map(fn, [x])[0]

    def stop(self) -> None:
        self._loky.get_reusable_executor().shutdown(wait=True)


class IPyParallel(Peer):
    """ipyparallel `Cluster(n=2)` started in-process, load-balanced view."""

    def __init__(self) -> None:
        import ipyparallel

        self._ipp = ipyparallel

    def start(self) -> None:
        self._cluster = self._ipp.Cluster(n=WORKERS)
        self._client = self._cluster.start_and_connect_sync()
        self._view = self._client.load_balanced_view()

    def map(self, fn: Fn, items: list[Any]) -> list[Any]:
        return list(self._view.map_sync(fn, items))

    def call(self, fn: Fn, x: Any) -> Any:
        return self._view.apply_sync(fn, x)

    def stop(self) -> None:
        self._client.close()
        self._cluster.stop_cluster_sync()


class Dask(Peer):
    """dask.distributed `LocalCluster` with 2 single-threaded worker processes."""

    def __init__(self) -> None:
        import distributed

        self._distributed = distributed

    def start(self) -> None:
        self._cluster = self._distributed.LocalCluster(
            n_workers=WORKERS, threads_per_worker=1, processes=True
        )
        self._client = self._distributed.Client(self._cluster)

    def map(self, fn: Fn, items: list[Any]) -> list[Any]:
        return list(self._client.gather(self._client.map(fn, items)))

    def call(self, fn: Fn, x: Any) -> Any:
        return self._client.submit(fn, x).result()

    def stop(self) -> None:
        self._client.close()
        self._cluster.close()


class Ray(Peer):
    """ray with `num_cpus=2`: one `@ray.remote` task per input."""

    def __init__(self) -> None:
        import ray

        self._ray = ray
        self._remote: dict[Fn, Any] = {}

    def start(self) -> None:
        self._ray.init(num_cpus=WORKERS, include_dashboard=False)

    def _task(self, fn: Fn) -> Any:
        if fn not in self._remote:
            self._remote[fn] = self._ray.remote(fn)
        return self._remote[fn]

    def map(self, fn: Fn, items: list[Any]) -> list[Any]:
        task = self._task(fn)
        return list(self._ray.get([task.remote(x) for x in items]))

    def call(self, fn: Fn, x: Any) -> Any:
        return self._ray.get(self._task(fn).remote(x))

    def stop(self) -> None:
        self._ray.shutdown()


class Nbscale(Peer):
    """nbscale through its public, Modal-style API, with the process launcher."""

    launcher = "process"

    def __init__(self) -> None:
        os.environ["NBSCALE_LAUNCHER"] = self.launcher  # never "auto": say what is measured
        import nbscale

        self._nbscale = nbscale

    def start(self) -> None:
        app = self._nbscale.App("bench")
        self._functions: dict[Fn, Any] = {
            fn: app.function(max_containers=WORKERS, min_containers=WORKERS)(fn)
            for fn in (workloads.noop, workloads.sleep10ms, workloads.array_nbytes)
        }

    def map(self, fn: Fn, items: list[Any]) -> list[Any]:
        return list(self._functions[fn].map(items))

    def call(self, fn: Fn, x: Any) -> Any:
        return self._functions[fn].remote(x)

    def stop(self) -> None:
        shutdown = getattr(self._nbscale, "shutdown", None)
        if shutdown is not None:
            shutdown()

    def cold_start(self) -> None:
        """The embedded control plane and the first worker start on this first call."""
        app = self._nbscale.App("bench")
        app.function(max_containers=WORKERS)(workloads.noop).remote(1)

    def scale_up(self, workers: int) -> dict[str, float]:
        """W5-scale: seconds from an empty pool (control plane running, function
        registered) to ``workers`` workers all registered and idle; then a new function's
        first result with the control plane up, as in a Jupyter server or after a
        notebook's first function (Docker: a warm spare, started meanwhile, serves it)."""
        os.environ["NBSCALE_MAX_WORKERS"] = str(workers + 1)
        app = self._nbscale.App("bench")
        fn = app.function(max_containers=workers, scaledown_window=60)(workloads.noop)
        assert fn.get_current_stats().num_total_runners == 0  # registers the pool
        start = time.perf_counter()
        fn.update_autoscaler(min_containers=workers)
        while fn.get_current_stats().containers["idle"] < workers:
            time.sleep(0.005)
        scale_s = time.perf_counter() - start
        time.sleep(2.0)  # the control plane idle again (Docker's spare starts within 1 s)
        new = app.function(max_containers=1)(workloads.first_of_its_pool)
        start = time.perf_counter()
        new.remote(1)
        return {"scale_s": scale_s, "new_pool_s": time.perf_counter() - start}


class NbscaleDocker(Nbscale):
    """nbscale with the Docker launcher: a container per worker, on a bridge network,
    reaching the control plane over TCP with CurveZMQ."""

    launcher = "docker"
    transport = "tcp"

    def __init__(self) -> None:
        os.environ["NBSCALE_DOCKER_TRANSPORT"] = self.transport  # never inherited: say which
        super().__init__()
        import cloudpickle

        # Containers have nbscale's runtime, not this benchmark's modules: send their code.
        cloudpickle.register_pickle_by_value(workloads)

    def scale_up(self, workers: int) -> dict[str, float]:
        """As for processes, plus the time to find an unchanged image already built."""
        from nbscale._image_build import build

        start = time.perf_counter()
        build(self._nbscale.Image.from_kernel())
        rebuild_s = time.perf_counter() - start
        return {**super().scale_up(workers), "rebuild_s": rebuild_s}


class NbscaleDockerIpc(NbscaleDocker):
    """The same, each container reaching the control plane over a Unix socket of its own,
    large data in shared memory (``docker_transport="ipc"``)."""

    transport = "ipc"


class NbscaleSlurm(Nbscale):
    """nbscale with the Slurm launcher: a batch job per worker (W5 here is W5-slurm)."""

    launcher = "slurm"

    def __init__(self) -> None:
        # scripts/slurm-setup's cluster, unless SLURM_CONF names another
        conf = os.path.join(os.environ.get("NBSCALE_SLURM_DIR", SLURM_SETUP_DIR), "slurm.conf")
        if "SLURM_CONF" not in os.environ and os.path.exists(conf):
            os.environ["SLURM_CONF"] = conf
        super().__init__()


PEERS: dict[str, type[Peer]] = {
    "nbscale": Nbscale,
    "nbscale-docker": NbscaleDocker,
    "nbscale-docker-ipc": NbscaleDockerIpc,
    "nbscale-slurm": NbscaleSlurm,
    "ppe": ProcessPool,
    "joblib": Joblib,
    "ipyparallel": IPyParallel,
    "dask": Dask,
    "ray": Ray,
}
