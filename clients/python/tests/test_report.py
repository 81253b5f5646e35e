import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from standardwebhooks import Webhook

from conftest import SECRET, STATUS_TOKEN
from spendguard import Guard, ReportRejected


def record(n, **extra):
    return {"id": f"r-{n}", "model": "gpt-4o", "tokens_in": n, "tokens_out": 2 * n, **extra}


def test_records_go_in_signed_batches_of_at_most_1000(make_guard, webhook):
    guard = make_guard()
    for n in range(2500):
        guard.report(record(n))
    assert guard.flush(timeout=10)
    assert [len(d["ids"]) for d in webhook.deliveries] == [1000, 1000, 500]
    assert sorted(webhook.counted) == sorted(f"r-{n}" for n in range(2500))
    assert webhook.counted["r-7"]["scope"] == "openai/prod"  # the Guard's scope by default
    assert guard.stats.records_sent == 2500 and guard.stats.batches_sent == 3


def test_batches_stay_under_256_kib(make_guard, webhook):
    guard = make_guard()
    for n in range(300):
        guard.report(record(n, endpoint="/" + "x" * 2000))
    assert guard.flush(timeout=10)
    assert len(webhook.deliveries) >= 3
    assert all(len(d["body"].encode()) <= 256 * 1024 for d in webhook.deliveries)
    assert len(webhook.counted) == 300


def test_the_interval_sends_without_an_explicit_flush(webhook):
    # a real (short) interval: the test waits on the outcome, never on a duration
    done = threading.Event()
    guard = Guard("http://guard.test", SECRET, STATUS_TOKEN, "openai/prod", flush_interval=0.01,
                  transport=httpx.MockTransport(lambda r: (done.set(), webhook.handle(r))[1]))
    try:
        guard.report(record(1))
        assert done.wait(10)
    finally:
        guard.close()


def test_a_lost_answer_is_retried_as_the_same_message_and_counts_once(make_guard, webhook, clock):
    def count_then_lose_the_answer(delivery):
        webhook.count(delivery["records"])
        raise httpx.ReadError("connection reset after the webhook counted")

    webhook.script = [count_then_lose_the_answer]
    guard = make_guard()
    for n in range(5):
        guard.report(record(n))
    assert guard.flush(timeout=10)
    first, replay = webhook.deliveries
    assert replay["webhook_id"] == first["webhook_id"]
    assert replay["ids"] == first["ids"] and replay["body"] == first["body"]
    assert len(webhook.counted) == 5
    assert guard.stats.retries == 1 and guard.stats.records_sent == 5
    assert len(clock.slept) == 1 and 0 <= clock.slept[0] <= 0.5  # backoff with jitter


def test_retry_after_is_honoured_and_backoff_grows(make_guard, webhook, clock):
    webhook.script = [
        lambda d: httpx.Response(429, headers={"retry-after": "7"}, json={"error": "slow down"}),
        lambda d: httpx.Response(503, json={"error": "store unavailable"}),
        lambda d: httpx.Response(503, json={"error": "store unavailable"}),
        lambda d: httpx.Response(408),
        lambda d: httpx.Response(409, json={"error": "concurrent delivery"}),
    ]
    guard = make_guard()
    guard.report(record(1))
    assert guard.flush(timeout=10)
    assert clock.slept[0] == 7.0
    assert 0 <= clock.slept[1] <= 1.0 and 0 <= clock.slept[2] <= 2.0 and 0 <= clock.slept[3] <= 4.0
    assert len({d["webhook_id"] for d in webhook.deliveries}) == 1
    assert list(webhook.counted) == ["r-1"]


def test_gives_up_after_max_retries_and_says_so(make_guard, webhook):
    errors = []
    webhook.script = [lambda d: httpx.Response(503)] * 3
    guard = make_guard(max_retries=2, on_error=errors.append)
    guard.report(record(1))
    assert guard.flush(timeout=10)
    assert len(webhook.deliveries) == 3 and not webhook.counted
    assert guard.stats.records_dropped_after_retries == 1
    assert len(errors) == 1 and "not delivered after 2 retries" in str(errors[0])


def test_4xx_is_not_retried_and_is_surfaced(make_guard, webhook):
    errors = []
    webhook.script = [lambda d: httpx.Response(401, json={"error": "unauthorized"})]
    guard = make_guard(on_error=errors.append)
    guard.report(record(1))
    guard.report(record(2))
    assert guard.flush(timeout=10)
    assert len(webhook.deliveries) == 1
    assert isinstance(errors[0], ReportRejected)
    assert errors[0].status == 401 and errors[0].record_ids == ["r-1", "r-2"]
    assert guard.stats.records_rejected == 2


def test_one_refused_record_is_surfaced_and_the_others_are_sent(make_guard, webhook):
    errors = []
    webhook.script = [lambda d: httpx.Response(400, json={"error": "unknown model", "field": "records[1].model"})]
    guard = make_guard(on_error=errors.append)
    for n in range(3):
        guard.report(record(n, model="gpt-5" if n == 1 else "gpt-4o"))
    assert guard.flush(timeout=10)
    assert sorted(webhook.counted) == ["r-0", "r-2"]
    assert errors[0].record_ids == ["r-1"] and errors[0].field == "records[1].model"


def test_the_queue_is_bounded_dropping_the_oldest_without_blocking(make_guard, webhook):
    guard = make_guard(max_queue=3)
    for n in range(5):
        guard.report(record(n))  # the sender waits for its interval: nothing leaves the queue
    assert guard.stats.records_dropped_queue_full == 2
    assert guard.flush(timeout=10)
    assert sorted(webhook.counted) == ["r-2", "r-3", "r-4"]


def test_report_never_waits_for_the_network(webhook):
    release = threading.Event()

    def stuck(request):
        release.wait(30)
        return webhook.handle(request)

    guard = Guard("http://guard.test", SECRET, STATUS_TOKEN, "openai/prod", flush_interval=3600,
                  max_batch_records=1, max_queue=10, transport=httpx.MockTransport(stuck))
    try:
        guard.report(record(0))  # the sender takes it and hangs on the network
        for n in range(1, 50):
            guard.report(record(n))  # the caller is never held: the queue drops its oldest
        assert guard.stats.records_dropped_queue_full >= 39
    finally:
        release.set()
        guard.close()


def test_ids_are_kept_or_made_and_bad_records_refused_naming_the_field(make_guard, webhook):
    guard = make_guard()
    given = guard.report({"id": "req_abc", "tokens_in": 1})
    made = guard.report({"tokens_in": 1})
    assert given == "req_abc" and len(made) == 32
    with pytest.raises(ValueError, match="^id"):
        guard.report({"id": "has space"})
    with pytest.raises(ValueError, match="^record"):
        guard.report(["not", "a", "record"])
    assert guard.flush(timeout=10)
    assert sorted(webhook.counted) == sorted([given, made])


class _Counting(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Webhook(SECRET).verify(body.decode(), dict(self.headers))
        self.server.ids.extend(r["id"] for r in json.loads(body)["records"])
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def test_records_queued_at_exit_are_sent():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Counting)
    server.ids = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    script = textwrap.dedent(f"""
        from spendguard import Guard
        guard = Guard("http://127.0.0.1:{server.server_address[1]}", {SECRET!r}, "t", "openai/prod", flush_interval=3600)
        for n in range(3):
            guard.report({{"id": f"exit-{{n}}", "tokens_in": n}})
        # no flush, no close: the interpreter's exit sends them
    """)
    try:
        subprocess.run([sys.executable, "-c", script], check=True, timeout=60, env={**os.environ})
        assert sorted(server.ids) == ["exit-0", "exit-1", "exit-2"]
    finally:
        server.shutdown()


def test_a_record_that_is_not_json_is_surfaced_and_the_others_sent(make_guard, webhook):
    errors = []
    guard = make_guard(on_error=errors.append)
    guard.report(record(1))
    bad = guard.report({"id": "not-json", "feature": object()})
    guard.report(record(2))
    assert guard.flush(timeout=10)
    assert sorted(webhook.counted) == ["r-1", "r-2"]
    assert isinstance(errors[0], ReportRejected) and errors[0].record_ids == [bad]
    assert "not JSON" in str(errors[0])


def refuse_model(model):
    """The webhook refusing the first record with `model` (not in its price book), naming it."""

    def answer(delivery):
        for i, r in enumerate(delivery["records"]):
            if r.get("model") == model:
                return httpx.Response(400, json={"error": f"no price for openai/{model}", "field": f"records[{i}].model"})
        return None

    return answer


def test_records_refused_for_the_same_field_value_cost_one_request_not_one_each(make_guard, webhook):
    webhook.script = [refuse_model("gpt-5")] * 10
    errors = []
    guard = make_guard(on_error=errors.append)
    for n in range(1000):
        guard.report(record(n, model="gpt-5"))
    guard.report(record(1000))
    assert guard.flush(timeout=10)
    assert len(webhook.deliveries) <= 3
    assert len(errors) == 1 and isinstance(errors[0], ReportRejected)
    assert sorted(errors[0].record_ids) == sorted(f"r-{n}" for n in range(1000))
    assert errors[0].field == "records[0].model"
    assert list(webhook.counted) == ["r-1000"]
    assert guard.stats.records_rejected == 1000 and guard.stats.records_sent == 1


def test_a_nan_is_refused_at_report_naming_the_field_and_loses_no_other_record(make_guard, webhook):
    errors = []
    guard = make_guard(on_error=errors.append)
    for n in range(999):
        guard.report(record(n))
    with pytest.raises(ValueError, match="^tokens_in: must be a finite number"):
        guard.report(record(999, tokens_in=float("nan")))
    with pytest.raises(ValueError, match=r"^cost\.amount: must be a finite number"):
        guard.report(record(1000, cost={"amount": float("inf"), "currency": "USD"}))
    # a NaN put in after report() (the record is copied, its nested values are not) is refused alone
    cost = {"amount": 1.5, "currency": "USD"}
    late = guard.report(record(1001, cost=cost))
    cost["amount"] = float("nan")
    assert guard.flush(timeout=10)
    assert len(webhook.counted) == 999 and guard.stats.records_sent == 999
    assert [e.record_ids for e in errors] == [[late]]


@pytest.mark.parametrize("date", ["Sun Nov  6 08:49:37 1994", "Sun, 06 Nov 1994 08:49:37 -0000", "Sun, 06 Nov 1994 08:49:37 GMT"])
def test_retry_after_as_an_http_date_in_any_of_its_forms_is_honoured(make_guard, webhook, date):
    webhook.script = [lambda d: httpx.Response(503, headers={"retry-after": date}, json={"error": "store unavailable"})]
    guard = make_guard()
    guard.report(record(1))
    assert guard.flush(timeout=10)
    assert guard.stats.records_sent == 1 and guard.stats.retries == 1


def test_records_in_flight_at_close_are_counted_as_not_sent(make_guard, webhook, caplog):
    webhook.script = [lambda d: httpx.Response(503, json={"error": "store unavailable"})] * 100
    released = threading.Event()
    guard = make_guard(sleep=lambda seconds: released.wait(30))  # the retry waits past close's timeout
    try:
        for n in range(3):
            guard.report(record(n))
        with caplog.at_level(logging.ERROR, logger="spendguard"):
            assert not guard.close(0.3)
        assert "3 usage records not sent at close" in caplog.text
    finally:
        released.set()


def test_report_after_close_is_refused_loudly(make_guard):
    guard = make_guard()
    guard.close(1)
    with pytest.raises(RuntimeError, match="report\\(\\) after close\\(\\)"):
        guard.report(record(1))


def test_report_never_waits_for_a_batch_being_encoded(make_guard, webhook):
    from decimal import Decimal

    encoding = threading.Event()
    release = threading.Event()

    class SlowDecimal(Decimal):
        def __str__(self) -> str:  # encoded by the sender thread
            encoding.set()
            release.wait(30)
            return super().__str__()

    guard = make_guard()
    try:
        guard.report(record(0, cost={"amount": SlowDecimal("1.5"), "currency": "USD"}))
        threading.Thread(target=guard.flush, daemon=True).start()
        assert encoding.wait(10)  # the sender is encoding the batch now
        reported = threading.Event()
        threading.Thread(target=lambda: (guard.report(record(1)), reported.set()), daemon=True).start()
        assert reported.wait(10), "report() waited for the sender's encoding"
    finally:
        release.set()
    assert guard.flush(timeout=10)
    assert sorted(webhook.counted) == ["r-0", "r-1"]
