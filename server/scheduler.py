"""Cross-session dynamic batching: policy (what runs together) apart from execution (the runner).

Sessions submit groups of windows. ``BatchPolicy`` takes windows from the live queue first, then
from the file queue, up to ``max_batch`` rows, splitting a group across batches when needed, and
returns a ``BatchPlan``. ``BatchScheduler`` runs plans on an executor thread through a
``run_batch`` callable (the ONNX runner), then hands each group its rows back in order.

The queue delay is a ceiling on how long a lone window may wait for company: the scheduler starts
a batch as soon as the executor is free, so under light load the delay is zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

__all__ = ["BatchPlan", "BatchPolicy", "BatchScheduler", "SchedulerStats", "WindowGroup"]

log = logging.getLogger(__name__)

RunBatch = Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]


@dataclass(eq=False)
class WindowGroup:
    """Windows of one session waiting for the model, and where their probabilities go."""

    patches: npt.NDArray[np.float32]
    live: bool
    future: asyncio.Future[npt.NDArray[np.float32]]
    enqueued_at: float = field(default_factory=time.perf_counter)
    taken: int = 0
    outputs: dict[int, npt.NDArray[np.float32]] = field(default_factory=dict)  # by start row
    done_rows: int = 0

    @property
    def remaining(self) -> int:
        return int(self.patches.shape[0]) - self.taken


@dataclass(frozen=True)
class BatchPlan:
    """Which rows of which groups form one model execution."""

    slices: tuple[tuple[WindowGroup, int, int], ...]  # group, start, stop

    @property
    def size(self) -> int:
        return sum(stop - start for _, start, stop in self.slices)

    def inputs(self) -> npt.NDArray[np.float32]:
        return np.concatenate([g.patches[start:stop] for g, start, stop in self.slices])


class BatchPolicy:
    """Pure batching policy; unit-testable without a model or an event loop."""

    def __init__(self, max_batch: int) -> None:
        self.max_batch = max_batch
        self.live: deque[WindowGroup] = deque()
        self.files: deque[WindowGroup] = deque()

    def add(self, group: WindowGroup) -> None:
        (self.live if group.live else self.files).append(group)

    @property
    def pending_windows(self) -> int:
        return sum(g.remaining for g in self.live) + sum(g.remaining for g in self.files)

    def drop_cancelled(self) -> None:
        for queue in (self.live, self.files):
            for group in [g for g in queue if g.future.done()]:
                queue.remove(group)

    def next_plan(self) -> BatchPlan | None:
        self.drop_cancelled()
        slices: list[tuple[WindowGroup, int, int]] = []
        room = self.max_batch
        for queue in (self.live, self.files):
            while queue and room:
                group = queue[0]
                take = min(room, group.remaining)
                slices.append((group, group.taken, group.taken + take))
                group.taken += take
                room -= take
                if not group.remaining:
                    queue.popleft()
        return BatchPlan(tuple(slices)) if slices else None


@dataclass
class SchedulerStats:
    executions: int = 0
    windows: int = 0
    compute_s: float = 0.0
    queue_s: float = 0.0


class BatchScheduler:
    def __init__(
        self,
        run_batch: RunBatch,
        executor: Executor,
        max_batch: int,
        max_queue_delay_s: float,
        concurrency: int = 1,
        on_batch: Callable[[int, float, list[float]], None] | None = None,
    ) -> None:
        """``on_batch(windows, compute_s, queue_waits_s)`` is called after each execution (metrics)."""
        self._on_batch = on_batch
        self._run_batch = run_batch
        self._executor = executor
        self._policy = BatchPolicy(max_batch)
        self._max_delay_s = max_queue_delay_s
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self.stats = SchedulerStats()

    @property
    def pending_windows(self) -> int:
        return self._policy.pending_windows

    async def submit(self, patches: npt.NDArray[np.float32], live: bool) -> npt.NDArray[np.float32]:
        """Probabilities [n, classes] for ``patches`` [n, 96, 64]; cancelling drops them."""
        if patches.shape[0] == 0:
            return np.empty((0, 0), dtype=np.float32)
        future: asyncio.Future[npt.NDArray[np.float32]] = asyncio.get_running_loop().create_future()
        self._policy.add(WindowGroup(patches, live, future))
        self._wakeup.set()
        return await future

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._loop(), name="batch-scheduler")

    async def stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            if not self._policy.pending_windows:
                self._wakeup.clear()
                await self._wakeup.wait()
            await self._slots.acquire()
            if self._max_delay_s and self._policy.pending_windows < self._policy.max_batch:
                await asyncio.sleep(self._max_delay_s)
            plan = self._policy.next_plan()
            if plan is None:
                self._slots.release()
                continue
            task = asyncio.create_task(self._execute(plan))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _execute(self, plan: BatchPlan) -> None:
        try:
            started = time.perf_counter()
            inputs = plan.inputs()
            loop = asyncio.get_running_loop()
            try:
                outputs = await loop.run_in_executor(self._executor, self._run_batch, inputs)
            except Exception as exc:
                log.exception("model execution failed")
                for group, _, _ in plan.slices:
                    if not group.future.done():
                        group.future.set_exception(RuntimeError(f"model execution failed: {exc}"))
                return
            finished = time.perf_counter()
            self.stats.executions += 1
            self.stats.windows += plan.size
            self.stats.compute_s += finished - started
            waits = [started - group.enqueued_at for group, _, _ in plan.slices]
            if self._on_batch is not None:
                self._on_batch(plan.size, finished - started, waits)
            row = 0
            for group, start, stop in plan.slices:
                self.stats.queue_s += started - group.enqueued_at
                group.outputs[start] = outputs[row : row + stop - start]
                group.done_rows += stop - start
                row += stop - start
                complete = group.done_rows == len(group.patches)
                if complete and not group.future.done():
                    ordered = [group.outputs[key] for key in sorted(group.outputs)]
                    group.future.set_result(np.concatenate(ordered))
        finally:
            self._slots.release()
