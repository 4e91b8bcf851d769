"""Retry with exponential backoff, and telling transient failures from permanent ones."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

# MLflow error codes meaning "this request is wrong": sending it again cannot succeed.
# Everything else (connection refused, timeouts, 5xx, rate limits) is worth retrying.
_PERMANENT_ERROR_CODES = frozenset(
    {
        "BAD_REQUEST",
        "INVALID_PARAMETER_VALUE",
        "INVALID_STATE",
        "RESOURCE_ALREADY_EXISTS",
        "RESOURCE_DOES_NOT_EXIST",
    }
)


def is_permanent(exc: BaseException) -> bool:
    """Whether `exc` is a refusal or a bug that retrying the same call cannot fix."""
    if isinstance(exc, (ValueError, TypeError, AttributeError, KeyError)):
        return True
    return getattr(exc, "error_code", None) in _PERMANENT_ERROR_CODES


def call_with_retries(fn: Callable[[], T], *, max_retries: int, backoff_s: float) -> T:
    """Call `fn`, retrying transient failures up to `max_retries` times.

    Waits `backoff_s`, then twice that, and so on between attempts. Permanent failures
    (see `is_permanent`) and the last transient one are raised.
    """
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as exc:
            if attempt >= max_retries or is_permanent(exc):
                raise
            time.sleep(backoff_s * 2**attempt)
            attempt += 1


@dataclass(frozen=True)
class RetryPolicy:
    """How every call to MLflow is retried: `max_retries` times on a transient failure,
    waiting `backoff_s`, then twice that, and so on; permanent failures are raised at once.

    Example:
        >>> retry = RetryPolicy(max_retries=2)
        >>> run = retry(lambda: client.get_run(run_id))
    """

    max_retries: int = 5
    backoff_s: float = 0.5

    def __call__(self, fn: Callable[[], T]) -> T:
        return call_with_retries(fn, max_retries=self.max_retries, backoff_s=self.backoff_s)

    def once(self) -> RetryPolicy:
        """No retries: for a backend that just failed every retry (it is probably down)."""
        return RetryPolicy(max_retries=0, backoff_s=0.0)
