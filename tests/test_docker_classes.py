"""``@app.cls`` on Docker workers: ``@enter`` runs exactly once per container, and each
parameter set gets containers of its own."""

from __future__ import annotations

import sys
import time

import cloudpickle
import pytest

import nbscale
from nbscale_server.launchers.docker_engine import LABEL_WORKER

pytestmark = pytest.mark.docker

# Workers have nbscale's runtime, not this test module: send it by value, as a notebook's
# classes always travel.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

app = nbscale.App("test-docker-classes")


@pytest.fixture(scope="module", autouse=True)
def _docker(docker_plane):
    return docker_plane


@app.cls(max_containers=2, scaledown_window=5)
class Model:
    scale: int = nbscale.parameter(default=2)

    @nbscale.enter()
    def load(self):
        type(self).loads = getattr(type(self), "loads", 0) + 1  # per container (process)
        self.weights = self.scale

    @nbscale.method()
    def predict(self, x):
        import socket

        time.sleep(0.005)
        return x * self.weights, socket.gethostname(), type(self).loads


def test_enter_runs_exactly_once_per_container_across_200_inputs(docker_plane) -> None:
    results = list(Model().predict.map(range(200)))
    assert [value for value, _, _ in results] == [2 * x for x in range(200)]
    containers = {host for _, host, _ in results}
    running = {
        c.id[:12]
        for c in docker_plane.containers.list(filters={"label": LABEL_WORKER}, ignore_removed=True)
    }
    assert containers <= running  # each result names the container that computed it
    assert {loads for _, _, loads in results} == {1}  # no container loaded twice


def test_parameter_sets_get_containers_of_their_own() -> None:
    two = list(Model(scale=2).predict.map(range(10)))
    three = list(Model(scale=3).predict.map(range(10)))
    assert [v for v, _, _ in three] == [3 * x for x in range(10)]
    assert not {h for _, h, _ in two} & {h for _, h, _ in three}
