"""Cross-session dynamic batching: policy (what runs together) apart from execution (the runner).

Sessions submit groups of windows. ``BatchPolicy`` takes windows from the live queue first, then
from the file queue, up to ``max_batch`` rows, splitting a group across batches when needed, and
returns a ``BatchPlan``. ``BatchScheduler`` runs plans on executor threads through a
``run_batch`` callable (the ONNX runner), then hands each group its rows back in order.

The executor thread that finishes a batch takes the next plan itself: the model never waits for
the event loop between two batches (that round trip cost a 300 s file about 1.3 ms per batch
of 16, 15% of the model's time). Results go back to the loop with one call per batch.

The queue delay is a ceiling on how long a live window waits for company: a batch starts when
it is full or when its oldest window has waited that long. With file windows queued it starts at
once: a file is throughput, and waiting only idled the model (a 300 s file's blocks each ended in
a partial batch that waited the full delay: 714-858 audio-s/s, 847-928 without the wait).

Stopping (server shutdown) raises ``asyncio.CancelledError`` in late submitters rather than an
error: their sessions are not failed, they replay after the restart.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from concurrent.futures import Future as ThreadFuture
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
    dropped: bool = False  # its submitter gave up (cancelled or failed): skip what is left

    def drop(self) -> None:
        self.dropped = True

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

    def oldest_enqueued_at(self) -> float | None:
        """When the longest-waiting queued window arrived (``time.perf_counter``), if any."""
        times = [queue[0].enqueued_at for queue in (self.live, self.files) if queue]
        return min(times) if times else None

    def drop_cancelled(self) -> None:
        for queue in (self.live, self.files):
            for group in [g for g in queue if g.dropped]:
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
        """``on_batch(windows, compute_s, queue_waits_s)`` is called after each execution (metrics).

        ``concurrency``: how many batches may run at once (executor threads draining the queue).
        """
        self._on_batch = on_batch
        self._run_batch = run_batch
        self._executor = executor
        self._policy = BatchPolicy(max_batch)
        self._max_delay_s = max_queue_delay_s
        self._concurrency = concurrency
        self._lock = threading.Condition()  # guards the policy, _draining and _stopping
        self._draining = 0
        self._stopping = False
        self._drains: set[ThreadFuture[None]] = set()
        self.stats = SchedulerStats()

    @property
    def pending_windows(self) -> int:
        with self._lock:
            return self._policy.pending_windows

    async def submit(self, patches: npt.NDArray[np.float32], live: bool) -> npt.NDArray[np.float32]:
        """Probabilities [n, classes] for ``patches`` [n, 96, 64]; cancelling drops them."""
        if patches.shape[0] == 0:
            return np.empty((0, 0), dtype=np.float32)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[npt.NDArray[np.float32]] = loop.create_future()
        group = WindowGroup(patches, live, future)
        with self._lock:
            if self._stopping:
                raise asyncio.CancelledError("the scheduler is stopping")
            self._policy.add(group)
            start = self._draining < self._concurrency
            if start:
                self._draining += 1
            else:
                self._lock.notify()  # a drain waiting for company may have enough now
        if start:
            self._start_drain(loop, group)
        try:
            return await future
        except BaseException:  # cancelled, or a batch failed: rows still queued are not run
            group.drop()
            raise

    def _start_drain(self, loop: asyncio.AbstractEventLoop, group: WindowGroup) -> None:
        try:
            drain = self._executor.submit(self._drain, loop)
        except RuntimeError:  # the executor is shutting down: as if stopped
            with self._lock:
                self._draining -= 1
                group.drop()
                self._policy.drop_cancelled()
            raise asyncio.CancelledError("the scheduler is stopping") from None
        self._drains.add(drain)
        drain.add_done_callback(self._drains.discard)

    async def stop(self) -> None:
        """Finish the batch in flight, run no other; queued windows stay unanswered (their
        sessions' workers are cancelled first, and replay after a restart)."""
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        if self._drains:
            await asyncio.gather(
                *(asyncio.wrap_future(d) for d in list(self._drains)), return_exceptions=True
            )

    # -- executor threads -----------------------------------------------------------------

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run plans until the queue is empty. However it ends, the drain is counted out, so
        the next submit starts another (a drain that vanished uncounted would leave every
        later window waiting for ever)."""
        try:
            self._drain_plans(loop)
        except BaseException:
            log.exception("batch scheduler thread failed")
            raise
        finally:
            # A window may have been queued after this drain last looked, by a submit that
            # saw it still counted and so started none: look again once counted out.
            with self._lock:
                self._draining -= 1
                again = (
                    not self._stopping
                    and self._policy.pending_windows > 0
                    and self._draining < self._concurrency
                )
                if again:
                    self._draining += 1
            if again:
                try:
                    drain = self._executor.submit(self._drain, loop)
                except RuntimeError:  # shutting down
                    with self._lock:
                        self._draining -= 1
                else:
                    self._drains.add(drain)
                    drain.add_done_callback(self._drains.discard)

    def _drain_plans(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            with self._lock:
                if self._max_delay_s:
                    self._wait_for_company()
                plan = None if self._stopping else self._policy.next_plan()
                if plan is None:
                    return
            started = time.perf_counter()
            error: BaseException | None = None
            outputs: npt.NDArray[np.float32] | None = None
            try:
                outputs = self._run_batch(plan.inputs())
            except Exception as exc:
                log.exception("model execution failed")
                error = exc
            except BaseException as exc:  # answer this batch's sessions, then let it go up
                loop.call_soon_threadsafe(
                    self._deliver, plan, None, exc, started, time.perf_counter()
                )
                raise
            finished = time.perf_counter()
            try:
                loop.call_soon_threadsafe(self._deliver, plan, outputs, error, started, finished)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                return

    def _wait_for_company(self) -> None:
        """With the lock held: wait until a full batch is queued or the oldest queued window
        has waited the queue delay (so no window waits longer than that for company)."""
        while not self._stopping and self._policy.pending_windows < self._policy.max_batch:
            if self._policy.files:  # a file's windows are throughput: never idle the model
                return
            oldest = self._policy.oldest_enqueued_at()
            if oldest is None:
                return
            remaining = oldest + self._max_delay_s - time.perf_counter()
            if remaining <= 0:
                return
            self._lock.wait(remaining)

    # -- event loop -----------------------------------------------------------------------

    def _deliver(
        self,
        plan: BatchPlan,
        outputs: npt.NDArray[np.float32] | None,
        error: BaseException | None,
        started: float,
        finished: float,
    ) -> None:
        if outputs is None:
            for group, _, _ in plan.slices:
                if not group.future.done():
                    group.future.set_exception(RuntimeError(f"model execution failed: {error}"))
            return
        self.stats.executions += 1
        self.stats.windows += plan.size
        self.stats.compute_s += finished - started
        waits = [started - group.enqueued_at for group, _, _ in plan.slices]
        self.stats.queue_s += sum(waits)
        if self._on_batch is not None:
            try:
                self._on_batch(plan.size, finished - started, waits)
            except Exception:  # metrics must never keep results from their sessions
                log.exception("batch metrics callback failed")
        row = 0
        for group, start, stop in plan.slices:
            group.outputs[start] = outputs[row : row + stop - start]
            group.done_rows += stop - start
            row += stop - start
            complete = group.done_rows == len(group.patches)
            if complete and not group.future.done():
                ordered = [group.outputs[key] for key in sorted(group.outputs)]
                group.future.set_result(
                    ordered[0] if len(ordered) == 1 else np.concatenate(ordered)
                )
