"""The batch scheduler on its own: what runs together, in what order, and what comes back.

``run_batch`` here is a plain function that records each batch and returns one row per window
(the window's first value), so every window's answer can be traced back to it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from server.scheduler import BatchPolicy, BatchScheduler, WindowGroup


def _patches(first: int, count: int) -> np.ndarray:
    """Windows whose values are their ids, so outputs can be traced."""
    return np.arange(first, first + count, dtype=np.float32)[:, None, None] * np.ones(
        (1, 2, 2), dtype=np.float32
    )


class _Model:
    def __init__(self, hold: threading.Event | None = None) -> None:
        self.batches: list[list[int]] = []
        self.hold = hold

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        if self.hold is not None:
            self.hold.wait(5)
        ids = [int(v) for v in inputs[:, 0, 0]]
        self.batches.append(ids)
        return inputs[:, 0, :1].copy()  # [n, 1]: each window's id


async def test_each_group_gets_its_own_rows_back_in_order() -> None:
    model = _Model()
    with ThreadPoolExecutor(1) as executor:
        scheduler = BatchScheduler(model, executor, max_batch=4, max_queue_delay_s=0.0)
        results = await asyncio.gather(
            scheduler.submit(_patches(0, 7), live=False),
            scheduler.submit(_patches(100, 3), live=True),
        )
        await scheduler.stop()
    assert results[0][:, 0].tolist() == list(range(7))
    assert results[1][:, 0].tolist() == [100, 101, 102]
    assert all(len(batch) <= 4 for batch in model.batches)
    assert sorted(i for batch in model.batches for i in batch) == [*range(7), 100, 101, 102]


async def test_live_windows_overtake_queued_file_windows() -> None:
    hold = threading.Event()
    model = _Model(hold)
    with ThreadPoolExecutor(1) as executor:
        scheduler = BatchScheduler(model, executor, max_batch=2, max_queue_delay_s=0.0)
        file = asyncio.create_task(scheduler.submit(_patches(0, 6), live=False))
        await asyncio.sleep(0.05)  # the first file batch is running (held)
        live = asyncio.create_task(scheduler.submit(_patches(100, 1), live=True))
        await asyncio.sleep(0.05)
        hold.set()
        await asyncio.gather(file, live)
        await scheduler.stop()
    assert model.batches[0] == [0, 1]
    assert model.batches[1][0] == 100  # next batch starts with the live window


async def _seconds_to_answer(windows: int, live: bool, max_queue_delay_s: float) -> float:
    """How long one group alone in the queue takes to come back."""
    with ThreadPoolExecutor(1) as executor:
        scheduler = BatchScheduler(_Model(), executor, 16, max_queue_delay_s)
        started = time.perf_counter()
        await scheduler.submit(_patches(0, windows), live=live)
        waited = time.perf_counter() - started
        await scheduler.stop()
    return waited


async def test_a_lone_window_waits_at_most_the_queue_delay() -> None:
    assert 0.04 <= await _seconds_to_answer(1, live=True, max_queue_delay_s=0.05) < 1.0


async def test_windows_arriving_within_the_delay_share_a_batch() -> None:
    model = _Model()
    with ThreadPoolExecutor(1) as executor:
        scheduler = BatchScheduler(model, executor, max_batch=16, max_queue_delay_s=0.2)
        await asyncio.gather(*(scheduler.submit(_patches(i, 1), live=True) for i in range(5)))
        await scheduler.stop()
    assert model.batches == [[0, 1, 2, 3, 4]]


async def test_cancelled_windows_are_not_run() -> None:
    hold = threading.Event()
    model = _Model(hold)
    with ThreadPoolExecutor(1) as executor:
        scheduler = BatchScheduler(model, executor, max_batch=2, max_queue_delay_s=0.0)
        first = asyncio.create_task(scheduler.submit(_patches(0, 2), live=True))
        await asyncio.sleep(0.05)  # running, held
        doomed = asyncio.create_task(scheduler.submit(_patches(10, 4), live=True))
        await asyncio.sleep(0.01)
        doomed.cancel()
        await asyncio.sleep(0.01)
        hold.set()
        await first
        await scheduler.stop()
    assert model.batches == [[0, 1]]


async def test_a_failing_model_fails_the_groups_of_that_batch_only() -> None:
    calls: list[int] = []

    def flaky(inputs: np.ndarray) -> np.ndarray:
        calls.append(len(inputs))
        if len(calls) == 1:
            raise RuntimeError("CUDA error")
        return inputs[:, 0, :1].copy()

    with ThreadPoolExecutor(1) as executor:
        scheduler = BatchScheduler(flaky, executor, max_batch=2, max_queue_delay_s=0.0)
        with pytest.raises(RuntimeError, match="model execution failed: CUDA error"):
            await scheduler.submit(_patches(0, 2), live=True)
        later = await scheduler.submit(_patches(5, 2), live=True)
        await scheduler.stop()
    assert later[:, 0].tolist() == [5, 6]


def test_policy_splits_a_group_across_batches() -> None:
    loop = asyncio.new_event_loop()
    try:
        policy = BatchPolicy(max_batch=3)
        group: WindowGroup = WindowGroup(_patches(0, 5), False, loop.create_future())
        policy.add(group)
        sizes: list[Any] = []
        while (plan := policy.next_plan()) is not None:
            sizes.append([(start, stop) for _, start, stop in plan.slices])
        assert sizes == [[(0, 3)], [(3, 5)]]
    finally:
        loop.close()


async def test_a_drain_thread_that_dies_does_not_stall_later_windows() -> None:
    """Whatever ends a drain thread, its windows get an answer and the next submit starts a
    new drain (a drain lost uncounted would leave every later window waiting for ever)."""

    class Escape(BaseException):
        pass

    calls: list[int] = []

    def dies_once(inputs: np.ndarray) -> np.ndarray:
        calls.append(len(inputs))
        if len(calls) == 1:
            raise Escape()
        return inputs[:, 0, :1].copy()

    with ThreadPoolExecutor(1) as executor:
        scheduler = BatchScheduler(dies_once, executor, max_batch=2, max_queue_delay_s=0.0)
        with pytest.raises(RuntimeError, match="model execution failed"):
            await asyncio.wait_for(scheduler.submit(_patches(0, 1), live=True), 5)
        later = await asyncio.wait_for(scheduler.submit(_patches(7, 1), live=True), 5)
        await scheduler.stop()
    assert later[:, 0].tolist() == [7]


async def test_windows_submitted_after_stop_are_cancelled_not_failed() -> None:
    """At shutdown a late window must not fail its session (that would persist an error and
    delete its audio); it is cancelled, and the session replays after the restart."""
    with ThreadPoolExecutor(1) as executor:
        scheduler = BatchScheduler(_Model(), executor, max_batch=2, max_queue_delay_s=0.0)
        await scheduler.stop()
        with pytest.raises(asyncio.CancelledError):
            await scheduler.submit(_patches(0, 1), live=True)


@pytest.mark.parametrize("concurrency", [1, 2])
async def test_no_window_is_stranded_under_racing_submits(concurrency: int) -> None:
    """Submits racing drains that are just running out of work: every window is answered."""
    model = _Model()
    rng = np.random.default_rng(concurrency)
    with ThreadPoolExecutor(concurrency) as executor:
        scheduler = BatchScheduler(
            model, executor, max_batch=4, max_queue_delay_s=0.0005, concurrency=concurrency
        )

        async def one(i: int) -> float:
            await asyncio.sleep(float(rng.uniform(0, 0.2)))
            result = await scheduler.submit(_patches(i, 1), live=bool(i % 2))
            return float(result[0, 0])

        answers = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(400))), 20)
        await scheduler.stop()
    assert answers == [float(i) for i in range(400)]


async def test_a_window_queued_while_a_drain_runs_out_of_work_is_answered() -> None:
    """The drain has found the queue empty but is not yet counted out; a submit in that gap
    sees it still running and starts none. The drain must look again once counted out."""

    class SlowToLeave(BatchScheduler):
        def _drain_plans(self, loop: asyncio.AbstractEventLoop) -> None:
            super()._drain_plans(loop)
            time.sleep(0.05)  # out of work, still counted

    with ThreadPoolExecutor(1) as executor:
        scheduler = SlowToLeave(_Model(), executor, max_batch=4, max_queue_delay_s=0.0)
        first = await scheduler.submit(_patches(0, 1), live=True)
        await asyncio.sleep(0.01)  # inside the gap
        second = await asyncio.wait_for(scheduler.submit(_patches(1, 1), live=True), 5)
        await scheduler.stop()
    assert (first[0, 0], second[0, 0]) == (0.0, 1.0)


async def test_file_windows_do_not_wait_for_company() -> None:
    """A file is throughput: its partial batches start at once instead of idling the model
    for the queue delay (live windows alone wait, see the test above)."""
    assert await _seconds_to_answer(3, live=False, max_queue_delay_s=0.5) < 0.25
