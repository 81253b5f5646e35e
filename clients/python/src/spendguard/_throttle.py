"""A token bucket whose rate follows the switch's limit factor."""

from __future__ import annotations

import threading
import time
from typing import Callable


class TokenBucket:
    """`rate` tokens a second, at most `max(1, rate)` saved up; the rate can change at any time."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._rate = -1.0  # no rate set yet
        self._tokens = 0.0
        self._updated = clock()

    def set_rate(self, rate: float) -> None:
        with self._lock:
            self._refill()
            if rate != self._rate:
                # a lower rate also lowers what was saved up under the old one; the first rate
                # starts full (the calls allowed so far were not throttled)
                first = self._rate < 0
                self._rate = rate
                self._tokens = self._capacity() if first else min(self._tokens, self._capacity())

    def take(self) -> float:
        """Takes a token if one is there (returns 0.0), else returns the seconds until one is."""
        with self._lock:
            self._refill()
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            if self._rate <= 0.0:
                return float("inf")
            return (1.0 - self._tokens) / self._rate

    def _capacity(self) -> float:
        return max(1.0, self._rate)

    def _refill(self) -> None:
        now = self._clock()
        if self._rate < 0:
            self._updated = now
            return
        self._tokens = min(self._capacity(), self._tokens + (now - self._updated) * self._rate)
        self._updated = now
