"""When a function's pickle is reused, and when it must be made again (pure)."""

from __future__ import annotations

import math

import numpy as np

from nbscale._fingerprint import fingerprint, frozen, same

SCALE = 3
SETTINGS = {"lr": 0.1}


def scaled(x):
    return x * SCALE + math.sqrt(x) + np.sum(x)


def reads_a_dict(x):
    return x * SETTINGS["lr"]


def notebook(source: str) -> dict:
    """The namespace of a notebook (``__main__``) that ran ``source``."""
    namespace = {"__name__": "__main__"}
    exec(source, namespace)
    return namespace


def test_a_function_of_immutable_globals_and_modules_is_reused():
    fp = fingerprint(scaled)
    assert fp is not None and frozen(fp)
    assert same(fp, fingerprint(scaled))


def test_rebinding_a_global_is_seen(monkeypatch):
    fp = fingerprint(scaled)
    monkeypatch.setattr(__import__(__name__), "SCALE", 4)
    assert not same(fp, fingerprint(scaled))


def test_mutable_globals_and_notebook_helpers_are_pickled_every_time():
    """A dict can change in place; a helper may use such globals itself."""
    assert not frozen(fingerprint(reads_a_dict))
    cells = notebook("def helper():\n    return 1\ndef uses_helper(x):\n    return helper() + x\n")
    assert not frozen(fingerprint(cells["uses_helper"]))


def test_defaults_and_closures_count():
    def outer(table):
        def inner(x, *, offset=(1, "a")):
            return table, offset

        return inner

    assert frozen(fingerprint(outer((1, 2))))
    assert not frozen(fingerprint(outer([1, 2])))  # a list in the closure
    with_list_default = eval("lambda x, y=[]: y")
    assert not frozen(fingerprint(with_list_default))


def test_functions_with_attributes_are_never_reused():
    def tagged(x):
        return x

    tagged.version = 1
    assert fingerprint(tagged) is None
