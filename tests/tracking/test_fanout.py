"""FanOutSink: every sink gets every call, even when one of them fails."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from tracking import FanOutSink, InMemorySink, Sink


class BrokenSink(Sink):
    """A sink whose backend rejects every metric."""

    def __init__(self, message: str) -> None:
        self.message = message

    def log_metrics(self, metrics: Mapping[str, float], *, step: int) -> None:
        raise OSError(self.message)

    def close(self, status: str = "FINISHED", *, error: str | None = None) -> None:  # type: ignore[override]
        raise OSError(self.message)


def test_every_sink_is_called_and_the_first_error_re_raised() -> None:
    before, after = InMemorySink(), InMemorySink()
    sink = FanOutSink([before, BrokenSink("disk full"), BrokenSink("network down"), after])
    with pytest.raises(OSError, match="disk full") as info:
        sink.log_metrics({"loss": 0.5}, step=2)
    assert before.history("loss") == after.history("loss") == [(2, 0.5)]
    assert info.value.__notes__ == ["BrokenSink also failed: OSError('network down')"]


def test_close_closes_every_sink_even_after_a_failure() -> None:
    first, last = InMemorySink(), InMemorySink()
    sink = FanOutSink([first, BrokenSink("disk full"), last])
    with pytest.raises(OSError, match="disk full"):
        sink.close("FAILED", error="boom")
    assert (first.status, first.error) == (last.status, last.error) == ("FAILED", "boom")


def test_every_call_is_forwarded() -> None:
    inner = InMemorySink()
    sink = FanOutSink([inner])
    sink.log_params({"lr": 0.1})
    sink.set_tags({"model": "mlp"})
    sink.log_artifact("config.yaml", artifact_path="configs")
    sink.log_model("model-object")
    sink.flush()
    assert inner.params == {"lr": 0.1}
    assert inner.tags == {"model": "mlp"}
    assert inner.artifacts == [("config.yaml", "configs")]
    assert inner.models == ["model-object"]
    assert inner.flush_count == 1


def test_non_sinks_are_rejected() -> None:
    with pytest.raises(TypeError, match="`sinks` must contain only `Sink` instances"):
        FanOutSink([InMemorySink(), "mlflow"])  # type: ignore[list-item]
