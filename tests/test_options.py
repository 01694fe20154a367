"""FunctionOptions: one validated object from the decorator to the launcher, and its
versioned wire form (decoded strictly)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

import nbscale
from nbscale._options import function_options
from nbscale_server.autoscaler import AutoscalerSettings
from nbscale_server.options import WIRE_VERSION, FunctionOptions
from nbscale_server.queue import RetryPolicy


def test_defaults_and_the_autoscaler_settings_they_mean():
    options = FunctionOptions()
    assert (options.timeout, options.max_inputs, options.slots_target) == (300.0, 1, 1)
    assert options.retries == RetryPolicy(max_retries=0)
    assert options.explicit_autoscaler() == {}
    assert options.autoscaler_settings() == AutoscalerSettings()


def test_only_the_autoscaler_settings_said_are_explicit():
    options = FunctionOptions(max_containers=4, scaledown_window=30)
    assert options.explicit_autoscaler() == {"max_containers": 4, "scaledown_window": 30}
    settings = options.autoscaler_settings()
    assert (settings.max_containers, settings.scaledown_window, settings.min_containers) == (
        4,
        30,
        0,
    )


def test_the_wire_form_round_trips_with_its_version():
    options = FunctionOptions(
        timeout=45,
        retries=RetryPolicy(max_retries=2, initial_delay=0.5),
        max_inputs=4,
        target_inputs=2,
        cpu=1.5,
        memory=512,
        gpu=["h100", "a100"],
        image="nbscale/worker:abc",
        min_containers=1,
        max_containers=3,
    )
    wire = options.to_wire()
    assert wire["version"] == WIRE_VERSION
    assert wire["gpu"] == ["h100", "a100"]  # JSON-friendly; kept as a tuple inside
    assert options.gpu == ("h100", "a100")
    assert FunctionOptions.from_wire(wire) == options


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": WIRE_VERSION + 1}, "version"),
        ({"version": None}, "version"),
        ({"colour": "blue"}, "unknown \\['colour'\\]"),
        ({"timeout": "300"}, "timeout"),
        ({"timeout": 0}, "timeout"),
        ({"retries": {"max_retries": 1}}, "retries"),
        ({"retries": {**dataclasses.asdict(RetryPolicy()), "max_delay": 600}}, "max_delay"),
        ({"max_inputs": 0}, "max_inputs"),
        ({"target_inputs": 5}, "target_inputs"),
        ({"memory": 2}, "memory"),
        ({"gpu": "A100:zero"}, "A100:zero"),
        ({"max_containers": 0}, "max_containers"),
        ({"min_containers": 3, "max_containers": 2}, "min_containers"),
        ({"is_async": "yes"}, "is_async"),
    ],
)
def test_the_wire_form_is_decoded_strictly(change: dict[str, Any], message: str):
    wire = {**FunctionOptions().to_wire(), **change}
    with pytest.raises(ValueError, match=message):
        FunctionOptions.from_wire(wire)


def test_a_missing_field_is_refused():
    wire = FunctionOptions().to_wire()
    del wire["timeout"]
    with pytest.raises(ValueError, match="missing \\['timeout'\\]"):
        FunctionOptions.from_wire(wire)
    with pytest.raises(ValueError, match="JSON object"):
        FunctionOptions.from_wire(["timeout", 300])


def test_the_api_turns_settings_into_options_once():
    async def coro(x):
        return x

    options = function_options(coro, {"retries": 2, "timeout": 10, "max_containers": None})
    assert options.is_async
    assert options.retries == RetryPolicy(max_retries=2, backoff_coefficient=1.0)
    assert options.explicit_autoscaler() == {}
    with pytest.raises(nbscale.InvalidError, match="unknown function setting"):
        function_options(coro, {"max_container": 3})
    with pytest.raises(nbscale.InvalidError, match="cpu"):
        function_options(coro, {"cpu": -1})
    with pytest.raises(nbscale.InvalidError, match="max_inputs"):
        nbscale.concurrent(max_inputs=0)


def test_a_with_options_variant_keeps_the_rest_and_gets_a_pool_of_its_own():
    app = nbscale.App("test-options")

    @app.function(max_containers=2, retries=1)
    def f(x):
        return x

    variant = f.with_options(timeout=20)
    assert (variant.options.timeout, variant.options.max_containers) == (20, 2)
    assert variant.options.retries == f.options.retries
    assert variant.options.variant and not f.options.variant
    assert variant.options.pool_id("fn-1") != f.options.pool_id("fn-1")
    assert f.with_options(timeout=20).options.pool_id("fn-1") == variant.options.pool_id("fn-1")
