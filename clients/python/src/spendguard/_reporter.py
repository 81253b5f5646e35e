"""Usage reports: a bounded queue, flushed in the background in signed batches."""

from __future__ import annotations

import atexit
import datetime
import email.utils
import json
import logging
import math
import random
import re
import threading
import time
import uuid
import weakref
from collections import deque
from decimal import Decimal
from typing import Any, Callable, Deque, Dict, List, Mapping, Optional, Set, Tuple

import httpx
from standardwebhooks import Webhook

from ._errors import ReportRejected

log = logging.getLogger("spendguard")

MAX_BODY_BYTES = 256 * 1024  # the webhook answers 413 above this (docs/webhook.md)
MAX_BATCH_RECORDS = 1000
RECORD_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# the webhook's answers worth sending the same batch again for
RETRYABLE = {408, 409, 429}
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 30.0
_RECORD_FIELD = re.compile(r"^records\[(\d+)\]")
_PREFIX = '{"records":['
_SUFFIX = "]}"


class Reporter:
    def __init__(
        self,
        *,
        url: str,
        usage_secret: str,
        sender: Optional[str],
        stats: Any,
        timeout: float,
        max_queue: int,
        flush_interval: float,
        max_batch_records: int,
        max_retries: int,
        on_error: Optional[Callable[[Exception], None]],
        transport: Optional[httpx.BaseTransport],
        sleep: Callable[[float], None],
    ) -> None:
        if max_queue < 1:
            raise ValueError("max_queue: must be at least 1")
        if not 1 <= max_batch_records <= MAX_BATCH_RECORDS:
            raise ValueError(f"max_batch_records: must be 1 to {MAX_BATCH_RECORDS}")
        self._url = f"{url}/usage"
        self._signer = Webhook(usage_secret)
        self._sender = sender
        self._stats = stats
        self._max_queue = max_queue
        self._flush_interval = flush_interval
        self._max_batch = max_batch_records
        self._max_retries = max_retries
        self._on_error = on_error or _log_error
        self._sleep = sleep
        self._http = httpx.Client(timeout=timeout, transport=transport)
        self._queue: Deque[Tuple[str, Dict[str, Any]]] = deque()  # (record id, the record)
        self._cond = threading.Condition()
        self._in_flight = 0
        self._flush_requested = False
        self._stopping = False
        self._closed = False
        self._oldest_queued_at = 0.0
        self._thread = threading.Thread(target=self._run, name="spendguard-reporter", daemon=True)
        self._thread.start()
        # a weak reference: the exit hook must not keep an abandoned Guard alive
        ref = weakref.ref(self)
        self._exit_hook = lambda: (lambda r: r.close(10.0) if r else None)(ref())
        atexit.register(self._exit_hook)

    def add(self, record: Mapping[str, Any], default_scope: str) -> str:
        if self._closed:
            # nothing would send it: refused loudly, not queued to be lost
            raise RuntimeError("spendguard: report() after close()")
        if not isinstance(record, Mapping):
            raise ValueError("record: must be a mapping (docs/budgets.md#usage-records)")
        record = dict(record)
        if "id" not in record:
            record["id"] = uuid.uuid4().hex
        record_id = record["id"]
        if not isinstance(record_id, str) or not RECORD_ID.match(record_id):
            raise ValueError("id: must be 1 to 128 letters, digits, `.`, `_`, `-`, `:`")
        _refuse_non_finite(record)
        record.setdefault("scope", default_scope)
        if "timestamp" not in record:
            record["timestamp"] = _now_rfc3339()
        # encoded by the sender thread: the caller's cost stays a copy and an append
        with self._cond:
            if len(self._queue) >= self._max_queue:
                self._queue.popleft()
                self._stats.records_dropped_queue_full += 1
                if self._stats.records_dropped_queue_full == 1 or self._stats.records_dropped_queue_full % 1000 == 0:
                    log.warning(
                        "spendguard: usage queue full (%d records): dropping the oldest (%d dropped so far)",
                        self._max_queue,
                        self._stats.records_dropped_queue_full,
                    )
            if not self._queue:
                self._oldest_queued_at = time.monotonic()
                self._cond.notify_all()  # the sender starts its flush interval
            self._queue.append((record_id, record))
            self._stats.records_queued += 1
            if len(self._queue) == self._max_batch:
                self._cond.notify_all()
        return record_id

    def flush(self, timeout: Optional[float]) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._flush_requested = True
            self._cond.notify_all()
            while self._queue or self._in_flight:
                if not self._thread.is_alive():
                    return False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def close(self, timeout: float) -> bool:
        if self._closed:
            return not self._queue
        self._closed = True
        deadline = time.monotonic() + timeout
        done = self.flush(timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        # what is left of the same timeout: an exiting process waits `timeout` at most in all
        self._thread.join(max(0.0, deadline - time.monotonic()))
        atexit.unregister(self._exit_hook)
        self._http.close()
        if not done:
            with self._cond:
                unsent = len(self._queue) + self._in_flight  # the batch still being retried included
            log.error("spendguard: %d usage records not sent at close", unsent)
        return done

    # -- the background sender ---------------------------------------------------------------

    def _run(self) -> None:
        carry: List[Tuple[str, Dict[str, Any]]] = []  # taken, but over one batch's 256 KiB: sent next
        while True:
            with self._cond:
                while not self._stopping and not carry and not self._ready():
                    if self._queue:
                        waited = time.monotonic() - self._oldest_queued_at
                        if waited >= self._flush_interval:
                            break
                        self._cond.wait(self._flush_interval - waited)
                    else:
                        self._cond.wait()
                if self._stopping and not self._queue and not carry:
                    return
                taken = carry + [self._queue.popleft() for _ in range(min(len(self._queue), self._max_batch - len(carry)))]
                self._in_flight = len(taken)
                self._oldest_queued_at = time.monotonic()
            # encoded without the lock: report() never waits for it
            batch, carry = self._encode(taken)
            try:
                self._send(batch)
            except Exception as e:  # never let the sender die: surface and go on
                self._stats.records_dropped_after_retries += len(batch)
                self._on_error(e)
            finally:
                with self._cond:
                    self._in_flight = len(carry)
                    if not self._queue and not carry:
                        self._flush_requested = False
                    self._cond.notify_all()

    def _ready(self) -> bool:
        return bool(self._queue) and (self._flush_requested or len(self._queue) >= self._max_batch)

    def _encode(
        self, taken: List[Tuple[str, Dict[str, Any]]]
    ) -> Tuple[List[Tuple[str, str]], List[Tuple[str, Dict[str, Any]]]]:
        """The records that fit one 256 KiB batch, encoded (a record that is not JSON is refused),
        and the ones that did not fit."""
        batch: List[Tuple[str, str]] = []
        size = len(_PREFIX) + len(_SUFFIX)
        for position, (record_id, record) in enumerate(taken):
            try:
                # NaN and Infinity are not JSON (the webhook refuses the whole body): refused alone
                encoded = json.dumps(record, separators=(",", ":"), default=_json_default, allow_nan=False)
            except (TypeError, ValueError) as e:
                self._reject([(record_id, "")], 0, f"the record is not JSON: {e}", None)
                continue
            added = len(encoded.encode()) + (1 if batch else 0)
            if batch and size + added > MAX_BODY_BYTES:
                return batch, taken[position:]
            batch.append((record_id, encoded))
            size += added
        return batch, []

    def _send(self, batch: List[Tuple[str, str]]) -> None:
        while batch:
            body = _PREFIX + ",".join(encoded for _, encoded in batch) + _SUFFIX
            if len(body.encode()) > MAX_BODY_BYTES:  # one record alone is over the limit
                self._reject(batch, 413, "a single record is over 256 KiB", None)
                return
            # one message id per batch content: every retry of it is the same message
            message_id = f"msg_{uuid.uuid4().hex}"
            status, answer = self._deliver(message_id, body)
            if status is None:
                self._stats.records_dropped_after_retries += len(batch)
                self._on_error(
                    RuntimeError(
                        f"usage batch of {len(batch)} records not delivered after {self._max_retries} retries: {answer}"
                    )
                )
                return
            if 200 <= status < 300:
                self._stats.batches_sent += 1
                self._stats.records_sent += len(batch)
                return
            error, field = _error_and_field(answer)
            index = _record_index(field)
            if index is not None and index < len(batch):
                # one record refused the whole batch: surface it with every record holding the same
                # value in that field (refused alike: not one request each), send the others again
                refused = _same_value(batch, index, field or "")
                self._reject([batch[i] for i in refused], status, error, field)
                batch = [r for i, r in enumerate(batch) if i not in refused]
                continue
            self._reject(batch, status, error, field)
            return

    def _deliver(self, message_id: str, body: str) -> Tuple[Optional[int], Any]:
        """Posts one signed batch, retrying what may succeed later; (None, why) when it gave up."""
        last: Any = None
        for attempt in range(self._max_retries + 1):
            if attempt:
                self._stats.retries += 1
            headers = {
                "content-type": "application/json",
                "webhook-id": message_id,
            }
            now = datetime.datetime.now(tz=datetime.timezone.utc)
            headers["webhook-timestamp"] = str(int(now.timestamp()))
            headers["webhook-signature"] = self._signer.sign(message_id, now, body)
            if self._sender:
                headers["spendguard-sender"] = self._sender
            retry_after = None
            try:
                answer = self._http.post(self._url, content=body.encode(), headers=headers)
            except httpx.HTTPError as e:
                last = f"{type(e).__name__}: {e}"
            else:
                if answer.status_code < 500 and answer.status_code not in RETRYABLE:
                    return answer.status_code, answer
                last = f"answered {answer.status_code}"
                retry_after = _retry_after(answer.headers.get("retry-after"))
            if attempt == self._max_retries:
                break
            self._sleep(retry_after if retry_after is not None else _backoff(attempt))
        return None, last

    def _reject(self, batch: List[Tuple[str, str]], status: int, error: str, field: Optional[str]) -> None:
        self._stats.records_rejected += len(batch)
        self._on_error(ReportRejected(status, error, field, [record_id for record_id, _ in batch]))


def _backoff(attempt: int) -> float:
    """Exponential backoff with full jitter: senders that failed together do not retry together."""
    return random.uniform(0, min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**attempt))


def _retry_after(value: Optional[str]) -> Optional[float]:
    """`Retry-After` in seconds or as an HTTP date (capped: a bogus far date must not stall us)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # the asctime and `-0000` forms: HTTP dates are always GMT
            when = when.replace(tzinfo=datetime.timezone.utc)
        seconds = (when - datetime.datetime.now(tz=datetime.timezone.utc)).total_seconds()
    return max(0.0, min(seconds, 300.0))


def _error_and_field(answer: Any) -> Tuple[str, Optional[str]]:
    try:
        body = answer.json()
        return str(body.get("error", "")), body.get("field")
    except (ValueError, AttributeError):
        return answer.text[:200], None


def _record_index(field: Optional[str]) -> Optional[int]:
    match = _RECORD_FIELD.match(field or "")
    return int(match.group(1)) if match else None


_MISSING = object()


def _same_value(batch: List[Tuple[str, str]], index: int, field: str) -> Set[int]:
    """The indexes of the records whose value at `field` (records[i].a.b) equals record `index`'s."""
    path = [key for key in _RECORD_FIELD.sub("", field).split(".") if key]
    if not path:
        return {index}  # the record as a whole: nothing to compare

    def value_at(encoded: str) -> Any:
        value: Any = json.loads(encoded)
        for key in path:
            if not isinstance(value, dict) or key not in value:
                return _MISSING
            value = value[key]
        return value

    refused_value = value_at(batch[index][1])
    if refused_value is _MISSING:
        return {index}
    return {i for i, (_, encoded) in enumerate(batch) if i == index or value_at(encoded) == refused_value}


_last_second: Tuple[int, str] = (-1, "")


def _now_rfc3339() -> str:
    """Now to the second (formatted once a second: report() is on the caller's path)."""
    global _last_second
    second = int(time.time())
    if _last_second[0] != second:
        _last_second = (second, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second)))
    return _last_second[1]


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime.datetime):
        return value.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    raise TypeError(f"{type(value).__name__} is not JSON")


def _refuse_non_finite(record: Dict[str, Any]) -> None:
    """NaN and Infinity cannot be sent (not JSON): refused at report(), naming the field."""
    path = _non_finite_at(record)
    if path is not None:
        raise ValueError(f"{path}: must be a finite number, not NaN or Infinity")


def _non_finite_at(value: Any) -> Optional[str]:
    """The path of the first NaN/Infinity inside a dict or list (a path is made only when found:
    this runs on the caller's path)."""
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        if isinstance(item, float):
            if not math.isfinite(item):
                return f"[{key}]" if isinstance(key, int) else key
        elif isinstance(item, (dict, list, tuple)):
            inner = _non_finite_at(item)
            if inner is not None:
                here = f"[{key}]" if isinstance(key, int) else key
                return here + inner if inner.startswith("[") else f"{here}.{inner}"
    return None


def _log_error(error: Exception) -> None:
    log.error("spendguard: %s", error)
