"""How fast one LLM judge may go: token buckets (:class:`RateLimiter`), AIMD requests in flight
(:class:`AdaptiveConcurrency`) and the health check that pauses or stops a judge (:class:`CircuitBreaker`)."""

from __future__ import annotations

import asyncio
import collections
import sys
import time

from ..utils import get_logger, redact
from .retry import FATAL_KINDS, FIXES, JudgeStopped, provider_message

logger = get_logger(__name__)


class RateLimiter:
    """Token buckets for requests and tokens per minute (either may be None = unlimited), shared by all calls.

    Waiters are served first come, first served; a request larger than the whole token budget waits for a full
    bucket rather than forever.
    """

    def __init__(self, rpm: float | None = None, tpm: float | None = None):
        for name, value in (("rpm", rpm), ("tpm", tpm)):
            if value is not None and value <= 0:
                raise ValueError(f"`{name}` must be > 0 or None for no limit (got {name}={value}).")
        self.rpm, self.tpm = rpm, tpm
        self._requests = float(rpm or 0)
        self._tokens = float(tpm or 0)
        self._stamp = time.monotonic()
        self._locks: dict[int, asyncio.Lock] = {}

    def _refill(self) -> None:
        now = time.monotonic()
        elapsed, self._stamp = now - self._stamp, now
        if self.rpm:
            self._requests = min(self.rpm, self._requests + elapsed * self.rpm / 60.0)
        if self.tpm:
            self._tokens = min(self.tpm, self._tokens + elapsed * self.tpm / 60.0)

    def _wait_time(self, tokens: float) -> float:
        wait = 0.0
        if self.rpm and self._requests < 1.0:
            wait = max(wait, (1.0 - self._requests) * 60.0 / self.rpm)
        if self.tpm:
            need = min(tokens, self.tpm)
            if self._tokens < need:
                wait = max(wait, (need - self._tokens) * 60.0 / self.tpm)
        return wait

    async def acquire(self, tokens: float = 0.0) -> None:
        if not self.rpm and not self.tpm:
            return
        loop_id = id(asyncio.get_running_loop())  # a lock is bound to one event loop; judges outlive asyncio.run
        lock = self._locks.setdefault(loop_id, asyncio.Lock())
        async with lock:
            while True:
                self._refill()
                wait = self._wait_time(tokens)
                if wait <= 0.0:
                    self._requests -= 1.0 if self.rpm else 0.0
                    self._tokens -= min(tokens, self.tpm) if self.tpm else 0.0
                    return
                await asyncio.sleep(wait)



class CircuitBreaker:
    """Per-judge health (issue #10): stops a judge after ``max_fatal_errors`` fatal errors in a row, and pauses a
    judge whose recent calls all timed out, then sends one probe and stops the judge when the probe times out too.

    "All timed out" means ``stall_after`` timeouts in a row and no answer for ``stall_window`` seconds, so an
    overloaded server that still answers some calls only gets fewer requests (:class:`AdaptiveConcurrency`).
    When the judge stops, one line (judge, error class, provider message redacted, the fix) goes to stderr.
    """

    def __init__(self, name: str, max_fatal_errors: int = 3, stall_after: int = 3, stall_pause: float = 30.0,
                 stall_window: float = 60.0, hint: str = ""):
        self.name, self.max_fatal_errors, self.stall_after = name, max_fatal_errors, stall_after
        self.stall_pause, self.stall_window, self.hint = stall_pause, stall_window, hint
        self.fatal_streak = self.timeout_streak = 0
        self.state = "closed"  # "open": paused until _reopen_at; "probe": one request decides
        self.stopped: str | None = None
        self._reopen_at = 0.0
        self._last_answer = time.monotonic()

    async def gate(self) -> bool:
        """Wait while the judge is paused; True when this caller is the probe; raises :class:`JudgeStopped`."""
        while True:
            if self.stopped:
                raise JudgeStopped(self.stopped)
            if self.state == "closed":
                return False
            now = time.monotonic()
            if self.state == "open" and now >= self._reopen_at:
                self.state = "probe"
                return True
            await asyncio.sleep(min(max(self._reopen_at - now, 0.0), 0.25) if self.state == "open" else 0.05)

    def record(self, kind: str, exc: BaseException | None = None, probe: bool = False) -> None:
        """One call's outcome: ``"ok"`` (any answer, readable or not) or an error kind of :func:`classify_error`."""
        if kind == "timeout":
            self.timeout_streak += 1
            if probe:
                self.stop(f"stalled: its last {self.timeout_streak} calls timed out, and so did a probe after a "
                          f"{self.stall_pause:g} s pause", "check that the server is up and not overloaded, raise "
                          "--timeout or lower --concurrency")
            elif self.state == "closed" and self.timeout_streak >= self.stall_after \
                    and time.monotonic() - self._last_answer > self.stall_window:
                self.state, self._reopen_at = "open", time.monotonic() + self.stall_pause
                logger.warning("judge %s: its last %d calls all timed out; pausing %g s, then probing once.",
                               self.name, self.timeout_streak, self.stall_pause)
            return
        self.timeout_streak = 0
        if kind in FATAL_KINDS:
            self.fatal_streak += 1
            if self.fatal_streak >= self.max_fatal_errors:
                self.stop(f"{self.fatal_streak} consecutive fatal errors, {kind} ({type(exc).__name__}): "
                          f"{provider_message(exc)}", FIXES[kind])
            return
        self.fatal_streak = 0  # the provider answered: alive, and the credentials work
        self._last_answer = time.monotonic()
        if self.state != "closed" and (probe or kind == "ok"):
            self.state = "closed"

    def stop(self, reason: str, fix: str) -> None:
        if self.stopped:
            return
        hint = f" ({self.hint})" if self.hint else ""
        self.stopped = redact(f"judge {self.name!r} stopped after {reason}. Fix: {fix}{hint}; then rerun with "
                              "--resume (answers so far are cached). Its remaining pairs are recorded as failed.")
        print(f"zelo: {self.stopped}", file=sys.stderr, flush=True)


class AdaptiveConcurrency:
    """AIMD limit on one judge's requests in flight (issue #10), like TCP congestion control.

    Slow start: ``initial`` requests at first, +1 per answer (the window doubles every round trip), so dead
    credentials cost a handful of requests, not a whole pool's worth. The first timeout or 429 halves the limit
    (multiplicative decrease, once per window: requests sent before the last decrease do not decrease it again);
    from then on it grows by one per window of answers (additive increase: +1/limit per answer). The limit never
    runs more than one ahead of the requests actually in flight. A small local server is then sent what it can
    serve instead of having every queued request time out. ``enabled=False``: no limit (the caller's pool only).
    """

    def __init__(self, minimum: int = 1, decrease: float = 0.5, enabled: bool = True, initial: int = 4):
        self.minimum, self.decrease, self.enabled = minimum, decrease, enabled
        self.limit: float | None = float(max(initial, minimum)) if enabled else None
        self.slow_start = enabled
        self.in_flight = self.peak = self.decreases = self.epoch = 0
        self._waiters: collections.deque = collections.deque()

    async def acquire(self) -> int:
        """Wait for a slot; returns the window (epoch) the request is sent in."""
        if self.limit is not None and (self.in_flight >= int(self.limit) or self._waiters):
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter  # the slot is reserved for us when woken
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._release_slot()
                else:
                    self._waiters.remove(waiter)
                raise
        else:
            self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        return self.epoch

    def release(self, epoch: int, outcome: str) -> None:
        """``outcome``: ``"ok"`` (an answer), ``"congested"`` (timeout / 429) or ``"neutral"``."""
        if self.limit is not None and outcome == "congested" and epoch == self.epoch:
            self.limit = max(float(self.minimum), min(self.limit, self.in_flight) * self.decrease)
            self.slow_start = False
            self.epoch += 1
            self.decreases += 1
            logger.info("concurrency lowered to %d after a timeout or 429", int(self.limit))
        elif self.limit is not None and outcome == "ok":
            step = 1.0 if self.slow_start else 1.0 / self.limit
            self.limit = min(self.limit + step, float(self.peak + 1))
        self._release_slot()

    def _release_slot(self) -> None:
        self.in_flight -= 1
        while self._waiters and (self.limit is None or self.in_flight < int(self.limit)):
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(None)


