import json
import os
import sys
import threading
from typing import Any, Callable, Dict, List, Optional

import httpx
import pytest
from standardwebhooks import Webhook

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "standins"))

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
STATUS_TOKEN = "t" * 40


class FakeClock:
    """A monotonic clock the tests move; sleeping moves it (no test waits for real time)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: List[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class FakeWebhook:
    """The webhook's contract as docs/webhook.md states it: verifies the Standard Webhooks
    signature, refuses bodies over 256 KiB and batches over 1,000 records, counts a record id once.
    `script` lets a test answer differently (a status, or raise after counting: a lost response)."""

    def __init__(self) -> None:
        self.status = {"scope": "openai/prod", "state": "open", "limit_factor": "1"}
        self.status_reads = 0
        self.status_error: Optional[Exception] = None
        self.deliveries: List[Dict[str, Any]] = []
        self.counted: Dict[str, Dict[str, Any]] = {}
        self.script: List[Callable[[Dict[str, Any]], Optional[httpx.Response]]] = []
        self.lock = threading.Lock()

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/status":
            self.status_reads += 1
            if self.status_error is not None:
                raise self.status_error
            if request.headers.get("authorization") != f"Bearer {STATUS_TOKEN}":
                return httpx.Response(401, json={"error": "unauthorized"})
            return httpx.Response(200, json={**self.status, "scope": request.url.params["scope"]})
        assert request.url.path == "/usage" and request.method == "POST"
        body = request.content.decode()
        Webhook(SECRET).verify(body, dict(request.headers))  # raises when the signature is wrong
        try:
            # like serve's parser: NaN and Infinity are not JSON
            records = json.loads(body, parse_constant=_not_json)["records"]
        except ValueError as e:
            return httpx.Response(400, json={"error": f"body: {e}", "field": "body"})
        delivery = {"webhook_id": request.headers["webhook-id"], "body": body, "ids": [r["id"] for r in records], "records": records}
        with self.lock:
            self.deliveries.append(delivery)
            step = self.script.pop(0) if self.script else None
        if len(request.content) > 256 * 1024:
            return httpx.Response(413, json={"error": "body over 256 KiB", "field": None})
        if not 1 <= len(records) <= 1000:
            return httpx.Response(400, json={"error": "1 to 1,000 records", "field": "records"})
        if step is not None:
            answer = step(delivery)
            if answer is not None:
                return answer
        return self.count(records)

    def count(self, records: List[Dict[str, Any]]) -> httpx.Response:
        accepted = duplicates = 0
        with self.lock:
            for r in records:
                if r["id"] in self.counted:
                    duplicates += 1
                else:
                    self.counted[r["id"]] = r
                    accepted += 1
        return httpx.Response(200, json={"accepted": accepted, "duplicates": duplicates, "alerts_published": 0})


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


@pytest.fixture
def webhook() -> FakeWebhook:
    return FakeWebhook()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_guard(webhook: FakeWebhook, clock: FakeClock):
    from spendguard import Guard

    guards = []

    def make(**options: Any) -> Guard:
        options.setdefault("transport", httpx.MockTransport(webhook.handle))
        options.setdefault("clock", clock)
        options.setdefault("sleep", clock.sleep)
        options.setdefault("flush_interval", 3600.0)  # the tests flush explicitly
        guard = Guard("http://guard.test", SECRET, STATUS_TOKEN, "openai/prod", **options)
        guards.append(guard)
        return guard

    yield make
    for guard in guards:
        guard.close(timeout=5)
