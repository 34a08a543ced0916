"""MLflow writes off the pipeline's critical path: one worker thread per pipeline run performs params, tags,
artifact uploads, run ends and the policy's model logging in the order they were submitted, while the next
stage computes. `drain` waits for everything submitted so far and raises the first failure; the pipeline
drains before it creates a model version, so a version is only registered once everything it refers to
is logged (and an upload that failed for good fails the run instead of registering it).

Outside a pipeline run (a task called on its own, the remote training flow) `submit` runs the call at once.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

T = TypeVar("T")


class BackgroundTracking:
    def __init__(self, name: str = "mlflow-writes") -> None:
        self._queue: queue.Queue[tuple[Callable[..., Any], tuple, dict, Future] | None] = queue.Queue()
        self._failures: list[BaseException] = []
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        self._queue.put((fn, args, kwargs, future))
        return future

    def drain(self, raise_errors: bool = True) -> None:
        """Wait until everything submitted so far is done; raise the first failure (once)."""
        self.submit(lambda: None).result()
        if raise_errors and self._failures:
            first, self._failures = self._failures[0], []
            raise RuntimeError(f"a tracking write failed: {first}") from first

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            fn, args, kwargs, future = item
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as err:  # kept for drain(); the worker goes on with the rest
                self._failures.append(err)
                future.set_exception(err)


_current: ContextVar[BackgroundTracking | None] = ContextVar("alignflow_background_tracking", default=None)


@contextmanager
def background_tracking() -> Iterator[BackgroundTracking]:
    """Within this block `submit` queues MLflow writes on one worker thread; leaving it waits for them."""
    tracker = BackgroundTracking()
    token = _current.set(tracker)
    try:
        yield tracker
    finally:
        _current.reset(token)
        tracker.close()


def submit(fn: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
    """Queue `fn(*args, **kwargs)` on the run's tracking thread, or run it now when there is none."""
    tracker = _current.get()
    if tracker is not None:
        return tracker.submit(fn, *args, **kwargs)
    future: Future[T] = Future()
    future.set_result(fn(*args, **kwargs))  # an error raises here, at the call, as before
    return future


def drain(raise_errors: bool = True) -> None:
    """Wait for the run's queued tracking writes; raise the first failure unless told not to."""
    tracker = _current.get()
    if tracker is not None:
        tracker.drain(raise_errors)
