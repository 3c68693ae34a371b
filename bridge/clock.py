"""Time for the bridge, behind a small seam so that windows and timers can be tested instantly.

Every pipeline stage takes `now` (seconds) as an argument and never reads a clock itself; the
async runtime reads `Clock.time()` and sleeps with `Clock.sleep()`. `SystemClock.time()` is wall
time that never goes backwards (wall time at start plus monotonic time since), so expiries stored
in the state file stay meaningful across restarts while timers ignore NTP steps. `ManualClock`
moves only when a test says so (or, with `auto_advance`, whenever someone sleeps).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    """Where the bridge gets time from."""

    def time(self) -> float:
        """Seconds since the Unix epoch, never decreasing within a process."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of this clock's time (returns at once for zero or less)."""
        ...


class SystemClock:
    """Real time: wall-anchored monotonic seconds, real `asyncio.sleep`."""

    def __init__(self) -> None:
        self._wall0 = time.time()
        self._mono0 = time.monotonic()

    def time(self) -> float:
        """Wall time at construction plus monotonic time elapsed since."""
        return self._wall0 + (time.monotonic() - self._mono0)

    async def sleep(self, seconds: float) -> None:
        """`asyncio.sleep`, clamped at zero."""
        await asyncio.sleep(max(0.0, seconds))


class ManualClock:
    """A clock for tests: time moves by `advance()`, sleepers wake when their deadline passes.

    With `auto_advance=True` a sleep moves time forward by itself at once, so retry loops with
    backoff run instantly and deterministically.
    """

    def __init__(self, start: float = 1_700_000_000.0, *, auto_advance: bool = False) -> None:
        self.now = start
        self.auto_advance = auto_advance
        self.slept: list[float] = []
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._ids = itertools.count()

    def time(self) -> float:
        """The current manual time."""
        return self.now

    async def sleep(self, seconds: float) -> None:
        """Wait until `advance()` passes now + seconds (or advance at once in auto mode)."""
        self.slept.append(seconds)
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        if self.auto_advance:
            self.advance(seconds)
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + seconds, next(self._ids), future))
        await future

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose deadline has passed."""
        self.now += seconds
        while self._sleepers and self._sleepers[0][0] <= self.now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    @property
    def sleepers(self) -> int:
        """How many sleeps are waiting."""
        return sum(1 for _, _, f in self._sleepers if not f.done())
