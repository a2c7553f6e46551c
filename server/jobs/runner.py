"""``JobRunner``: claims pending jobs of its handler's kinds from the repository, keeps their
lease alive while they run, and writes each one's terminal status with its output.

What a job does is its ``JobHandler``'s (one per kind of work: ``SoundEventsHandler`` for the
Jobs API, the training handler for Relay's training jobs); the runner owns only the row's life:
claim, lease, attempts, the terminal UPDATE. Each API runs its own runner, so a long training
job never holds up a sound-events worker, and a runner never claims a kind it cannot run.

A job is never only in memory: a worker that dies leaves its row ``running`` with a lease that
expires; the next sweep (at start-up, then every lease period) puts it back to ``pending`` and a
worker runs it again. A job that keeps killing its worker is failed after ``MAX_ATTEMPTS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from protocol.jobs import FAILED, SUCCEEDED
from server.jobs.repository import JobRecord, JobRepository
from server.jobs.sound_events import JobFailed

__all__ = ["MAX_ATTEMPTS", "JobHandler", "JobRunner", "Progress"]

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3

# Awaited now and then with the percent done; answers False once the job is no longer this
# worker's (canceled, or its lease lost): the handler stops.
Progress = Callable[[float], Awaitable[bool]]


class JobHandler(Protocol):
    """What runs one kind of job for a ``JobRunner``."""

    @property
    def kinds(self) -> tuple[str, ...]:
        """The job kinds this handler runs (the runner claims only these)."""
        ...

    @property
    def internal_error(self) -> str:
        """The job's ``error`` when ``run`` raises something unexpected."""
        ...

    async def run(self, job: JobRecord, progress: Progress) -> dict[str, Any]:
        """The job's output; raises ``JobFailed`` with the message for the job's ``error``."""
        ...


class JobRunner:
    def __init__(
        self,
        repository: JobRepository,
        handler: JobHandler,
        *,
        workers: int,
        lease_s: float,
        output_retention_s: float | None,
        on_finished: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``output_retention_s``: how long a succeeded job's output is kept (None: for as long
        as the job)."""
        self._repository = repository
        self._handler = handler
        self._workers = workers
        self._lease_s = lease_s
        self._retention_s = output_retention_s
        self._on_finished = on_finished
        self._clock = clock
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._running: dict[str, dict[str, Any]] = {}  # job id -> its worker's state

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._work(), name=f"job-worker-{n}") for n in range(self._workers)
        ]
        self._tasks.append(asyncio.create_task(self._requeue_loop(), name="job-lease-sweeper"))

    def wake(self) -> None:
        """A job was queued: a waiting worker looks now instead of at its next poll."""
        self._wake.set()

    def canceled(self, job_id: str) -> None:
        """The job was canceled in the repository: if this runner runs it, its handler hears so
        at its next progress call instead of at the next lease renewal."""
        state = self._running.get(job_id)
        if state is not None:
            state["mine"] = False

    async def close(self) -> None:
        """Stop working; the jobs this runner held are pending again at once (a shutdown is
        not a failed attempt), for the next process to run."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            released = await self._repository.release(self.owner, self._clock())
        except Exception:
            log.exception("jobs: releasing leases at shutdown failed (they expire instead)")
        else:
            if released:
                log.info("jobs: %d unfinished jobs are pending again", released)

    async def requeue_expired(self) -> int:
        requeued = await self._repository.requeue_expired(self._clock())
        if requeued:
            log.info("jobs: %d whose worker stopped are pending again", requeued)
            self.wake()
        return requeued

    async def _requeue_loop(self) -> None:
        while True:
            try:
                await self.requeue_expired()
            except Exception:
                log.exception("jobs: lease sweep failed")
            await asyncio.sleep(self._lease_s)

    async def _work(self) -> None:
        while True:
            try:
                job = await self._repository.claim(
                    self.owner, self._clock(), self._lease_s, self._handler.kinds
                )
            except Exception:
                log.exception("jobs: claim failed")
                job = None
            if job is None:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._lease_s / 2):
                        await self._wake.wait()
                continue
            try:
                await self._run(job)
            except asyncio.CancelledError:
                raise  # shutdown: the lease expires and the job runs again after a restart
            except Exception:
                log.exception("jobs: job %s failed unexpectedly", job.job_id)
                await self._finish(job, None, self._handler.internal_error)

    async def _run(self, job: JobRecord) -> None:
        if job.attempts > MAX_ATTEMPTS:
            await self._finish(
                job, None, f"the server stopped {job.attempts - 1} times while running this job"
            )
            return
        state: dict[str, Any] = {"progress": 0.0, "mine": True}

        async def heartbeat() -> None:
            while state["mine"]:
                await asyncio.sleep(self._lease_s / 3)
                try:
                    renewed = await self._repository.renew(
                        job.job_id,
                        self.owner,
                        self._clock(),
                        self._lease_s,
                        float(state["progress"]),
                    )
                    state["mine"] = renewed and state["mine"]  # ``canceled`` may have come
                except Exception:  # the next beat tries again; the lease has time left
                    log.exception("jobs: renewing the lease of %s failed", job.job_id)

        async def progress(percent: float) -> bool:
            state["progress"] = round(percent, 1)
            return bool(state["mine"])

        beat = asyncio.create_task(heartbeat(), name=f"job-lease-{job.job_id[:8]}")
        self._running[job.job_id] = state
        try:
            output = await self._handler.run(job, progress)
        except JobFailed as exc:
            if state["mine"]:
                await self._finish(job, None, str(exc))
            return
        finally:
            self._running.pop(job.job_id, None)
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
        await self._finish(job, output, None)

    async def _finish(
        self, job: JobRecord, output: dict[str, object] | None, error: str | None
    ) -> None:
        now_s = self._clock()
        done = await self._repository.finish(
            job.job_id,
            self.owner,
            now_s,
            SUCCEEDED if error is None else FAILED,
            output,
            error,
            now_s + self._retention_s
            if output is not None and self._retention_s is not None
            else None,
        )
        if done:
            self._on_finished()
