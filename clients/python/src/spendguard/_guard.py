"""The Guard: reads the kill switch (cached), throttles while it restores, queues usage."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional

import httpx

from ._errors import GuardUnavailable, ReportRejected, SpendBlocked, Throttled
from ._reporter import Reporter
from ._throttle import TokenBucket

log = logging.getLogger("spendguard")

# An unreachable guard is asked again after this long at most (not on every call: a call must not
# wait for a connect timeout each time while the guard is down).
UNREACHABLE_RETRY_SECONDS = 1.0
# the switch's limit_factor: a decimal string from 0 to 1 (anything else is an unreadable guard)
_LIMIT_FACTOR = re.compile(r"^(0|1)(\.[0-9]+)?$")


@dataclass(frozen=True)
class SwitchStatus:
    """What `GET /status` answered for the scope."""

    state: str  # open | engaged | restoring
    limit_factor: str  # a decimal string, "1" when open
    switch_scope: Optional[str]
    detail: Any


class Stats:
    """Counters an application can export (all only ever grow)."""

    def __init__(self) -> None:
        self.guard_unreachable = 0  # status reads that failed
        self.outages = 0  # periods during which the guard could not be read
        self.allowed_while_unreachable = 0  # calls let through by fail-open
        self.throttled_waits = 0  # calls that waited for a token
        self.records_queued = 0
        self.records_sent = 0  # counted or already counted (duplicates) by the webhook
        self.records_dropped_queue_full = 0
        self.records_rejected = 0  # refused by the webhook (4xx), surfaced through on_error
        self.records_dropped_after_retries = 0
        self.batches_sent = 0
        self.retries = 0
        self.reports_lost = 0  # wrapped calls whose usage could not be queued (logged as errors)

    def as_dict(self) -> Dict[str, int]:
        return dict(vars(self))


class Guard:
    """One application's link to spendguard for one scope.

    `allow()` before spending; `report(record)` after. See docs/clients.md.
    """

    def __init__(
        self,
        url: str,
        usage_secret: str,
        status_token: str,
        scope: str,
        *,
        cache_seconds: float = 5.0,
        fail_open: bool = True,
        max_calls_per_second: float = 10.0,
        sender: Optional[str] = None,
        timeout: float = 2.0,
        max_queue: int = 10_000,
        flush_interval: float = 1.0,
        max_batch_records: int = 1000,
        max_retries: int = 8,
        on_error: Optional[Callable[[Exception], None]] = None,
        transport: Optional[httpx.BaseTransport] = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError("url: must be the guard's http:// or https:// address")
        if not isinstance(status_token, str) or not status_token:
            raise ValueError("status_token: must be the guard's (non-empty) status token")
        if not scope or not isinstance(scope, str):
            raise ValueError("scope: must be a non-empty scope such as openai/prod/key-7f3a")
        if cache_seconds < 0:
            raise ValueError("cache_seconds: must be 0 or more")
        if max_calls_per_second <= 0:
            raise ValueError("max_calls_per_second: must be more than 0")
        self.url = url.rstrip("/")
        self.scope = scope
        self.fail_open = fail_open
        self.cache_seconds = cache_seconds
        self.max_calls_per_second = max_calls_per_second
        self.stats = Stats()
        self._status_token = status_token
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._status: Optional[SwitchStatus] = None
        self._status_expires = float("-inf")
        self._status_error: Optional[str] = None
        self._in_outage = False
        self._bucket = TokenBucket(clock)
        self._http = httpx.Client(timeout=timeout, transport=transport)
        self._reporter = Reporter(
            url=self.url,
            usage_secret=usage_secret,
            sender=sender,
            stats=self.stats,
            timeout=timeout,
            max_queue=max_queue,
            flush_interval=flush_interval,
            max_batch_records=max_batch_records,
            max_retries=max_retries,
            on_error=on_error,
            transport=transport,
            sleep=sleep,
        )

    # -- the kill switch ---------------------------------------------------------------------

    def status(self) -> Optional[SwitchStatus]:
        """The switch as last read (at most `cache_seconds` old); None when the guard is unreachable."""
        now = self._clock()
        if now < self._status_expires:
            return self._status
        with self._lock:
            if now < self._status_expires:  # another thread read it meanwhile
                return self._status
            self._refresh(now)
            return self._status

    def allow(self, wait: bool = True) -> None:
        """Returns when the call may spend.

        Raises SpendBlocked when the switch is engaged (GuardUnavailable when the guard cannot be
        read and fail_open is False). While the switch is restoring, calls are throttled to
        `max_calls_per_second * limit_factor`: with wait=True the call sleeps for its turn, with
        wait=False it raises Throttled.
        """
        while True:
            # read again after each wait: a switch that engaged meanwhile stops the call
            delay = self._turn(self.status(), wait)
            if delay == 0.0:
                return
            self._sleep(delay)

    async def allow_async(self, wait: bool = True) -> None:
        """`allow()` for asyncio code: the switch is read in a worker thread when the cache is
        stale, and a throttled call awaits its turn instead of blocking the event loop."""
        while True:
            # read again after each wait: a switch that engaged meanwhile stops the call
            status = self._status if self._clock() < self._status_expires else await asyncio.to_thread(self.status)
            delay = self._turn(status, wait)
            if delay == 0.0:
                return
            await asyncio.sleep(delay)

    def _turn(self, status: Optional[SwitchStatus], wait: bool) -> float:
        """0.0 when the call may go now, else the seconds it waits for its turn (raises when it
        may not go, or may not wait)."""
        delay = self._decide(status)
        if delay == 0.0:
            return 0.0
        assert status is not None  # only a restoring switch makes a call wait
        if not wait or delay == float("inf"):
            raise Throttled(self.scope, status.limit_factor, delay)
        self.stats.throttled_waits += 1
        return delay

    def _decide(self, status: Optional[SwitchStatus]) -> float:
        """0.0 when the call may go now, else the seconds until it may (raises when it may not)."""
        if status is None:
            if self.fail_open:
                self.stats.allowed_while_unreachable += 1
                return 0.0
            raise GuardUnavailable(self.scope, self._status_error or "guard unreachable")
        if status.state == "open":
            return 0.0
        if status.state == "engaged":
            raise SpendBlocked(self.scope, status.state, _reason(status))
        # restoring (or a state this client does not know: the cautious reading)
        return self._bucket.take()

    def _refresh(self, now: float) -> None:
        try:
            answer = self._http.get(
                f"{self.url}/status",
                params={"scope": self.scope},
                headers={"Authorization": f"Bearer {self._status_token}"},
            )
            if answer.status_code != 200:
                raise _StatusError(f"GET /status answered {answer.status_code}: {_error_of(answer)}", answer.status_code)
            body = answer.json()
            limit_factor = str(body.get("limit_factor", "1"))
            if not _LIMIT_FACTOR.match(limit_factor) or float(limit_factor) > 1:
                raise ValueError(f"GET /status answered limit_factor {limit_factor[:40]!r}, not a decimal from 0 to 1")
            status = SwitchStatus(
                state=str(body["state"]),
                limit_factor=limit_factor,
                switch_scope=body.get("switch_scope"),
                detail=body.get("detail"),
            )
        except (httpx.HTTPError, ValueError, KeyError, TypeError, _StatusError) as e:
            self.stats.guard_unreachable += 1
            self._status = None
            self._status_error = str(e) or type(e).__name__
            # counted from the failure, not the start: a read that timed out must not leave the
            # next call to wait for the same timeout again
            self._status_expires = self._clock() + min(self.cache_seconds, UNREACHABLE_RETRY_SECONDS)
            if not self._in_outage:
                self._in_outage = True
                self.stats.outages += 1
                # a refused token is a configuration mistake, not an outage that will pass
                refused = isinstance(e, _StatusError) and e.status in (401, 403)
                log.log(
                    logging.ERROR if refused else logging.WARNING,
                    "spendguard: the guard at %s cannot be read (%s); calls are %s until it answers",
                    self.url,
                    self._status_error,
                    "ALLOWED (fail-open)" if self.fail_open else "REFUSED (fail-closed)",
                )
            return
        if self._in_outage:
            self._in_outage = False
            log.warning("spendguard: the guard at %s answers again", self.url)
        self._status = status
        self._status_error = None
        self._status_expires = now + self.cache_seconds
        factor = float(status.limit_factor) if status.state != "engaged" else 0.0
        self._bucket.set_rate(self.max_calls_per_second * factor)

    # -- usage -------------------------------------------------------------------------------

    def report(self, record: Mapping[str, Any]) -> str:
        """Queues one usage record (docs/budgets.md#usage-records) and returns its id.

        Never blocks and never raises for the network: records are sent in the background (it
        raises ValueError for a record that cannot be sent, RuntimeError after close()). The
        scope defaults to the Guard's, the timestamp to now, the id to a new unique one (kept
        across retries, so a replayed batch counts nothing twice).
        """
        return self._reporter.add(record, default_scope=self.scope)

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Sends everything queued now; True when the queue was emptied within `timeout`."""
        return self._reporter.flush(timeout)

    def close(self, timeout: float = 10.0) -> bool:
        """Flushes and stops the background sender (also run at interpreter exit)."""
        done = self._reporter.close(timeout)
        self._http.close()
        return done

    def __enter__(self) -> "Guard":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _StatusError(Exception):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _reason(status: SwitchStatus) -> str:
    where = f"switch on {status.switch_scope}" if status.switch_scope else "switch engaged"
    detail = status.detail
    if isinstance(detail, dict):
        for key in ("reason", "budget", "alert_id"):
            if detail.get(key):
                return f"{where}: {key} {detail[key]}"
    return where


def _error_of(answer: httpx.Response) -> str:
    try:
        body = answer.json()
        return str(body.get("error", body))
    except ValueError:
        return answer.text[:200]


__all__ = ["Guard", "Stats", "SwitchStatus", "ReportRejected"]
