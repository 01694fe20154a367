"""Warnings about what peers send are limited per kind and window, and say what they left out."""

from __future__ import annotations

import logging

import pytest

from nbscale_server.log_limit import LimitedLog


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="test.limited")
    return caplog


def test_each_kind_is_logged_a_few_times_a_window_then_counted(logged):
    clock = Clock()
    limited = LimitedLog(logging.getLogger("test.limited"), per_window=3, window_s=60, clock=clock)
    for i in range(1000):
        limited.warning("dropping message %d from %r", i, b"peer")
    limited.warning("another kind")
    assert logged.messages == [
        "dropping message 0 from b'peer'",
        "dropping message 1 from b'peer'",
        "dropping message 2 from b'peer' (more like it within 60 s are counted, not logged)",
        "another kind",
    ]
    clock.now += 59
    limited.warning("dropping message %d from %r", 1000, b"peer")
    assert len(logged.messages) == 4  # still the same window
    clock.now += 1
    limited.warning("dropping message %d from %r", 1001, b"peer")
    said = "dropping message 1001 from b'peer' (and 998 more like it, not logged)"
    assert logged.messages[-1] == said
    limited.warning("dropping message %d from %r", 1002, b"peer")
    assert logged.messages[-1] == "dropping message 1002 from b'peer'"  # the count was said once


def test_an_exception_is_an_error_with_its_traceback_on_the_lines_logged(logged):
    limited = LimitedLog(logging.getLogger("test.limited"), per_window=1, clock=Clock())
    for _ in range(5):
        try:
            raise ValueError("broken message")
        except ValueError:
            limited.exception("error handling a message")
    [record] = logged.records
    assert record.levelno == logging.ERROR  # as Logger.exception, which it stands in for
    assert record.exc_info is not None and "broken message" in record.exc_text
