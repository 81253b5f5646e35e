"""The Python client against the real webhook (`spendguard serve`), with the official SDKs pointed
at the OpenAI and Anthropic stand-ins. Skipped, loudly, only when no spendguard binary with a
`serve` subcommand exists (clients/integration/serve.py says where it looks)."""

import os
import re
import sys
import threading
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anthropic
import httpx
import openai
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "integration"))

import serve as serve_module  # noqa: E402
from llm_apis import serve as serve_standin  # noqa: E402
from spendguard import Guard, SpendBlocked, Throttled, wrap_anthropic, wrap_openai  # noqa: E402

MISSING = serve_module.missing_reason()
# scripts/test (CI) requires the real webhook: there a missing `serve` fails, it is not skipped
REQUIRED = os.environ.get("SPENDGUARD_REQUIRE_SERVE") == "1"
if MISSING and not REQUIRED:
    print(f"\n*** SKIPPING the Python client's integration tests: {MISSING} ***\n", file=sys.stderr)
pytestmark = pytest.mark.skipif(MISSING is not None and not REQUIRED, reason=f"NO REAL WEBHOOK: {MISSING}")

# the prices of clients/integration/budgets.toml, per million tokens
PRICES = {
    "gpt-4o": {"input": Decimal("2.50"), "cached": Decimal("1.25"), "cache_write": Decimal("2.50"), "output": Decimal("10.00")},
    "claude-sonnet-4": {"input": Decimal("3.00"), "cached": Decimal("0.30"), "cache_write": Decimal("3.75"), "output": Decimal("15.00")},
}


def cost_of(call):
    price = PRICES[call["model"]]
    return sum(Decimal(call["usage"][k]) * price[k] for k in ("input", "cached", "cache_write", "output")) / Decimal(1_000_000)


class LosingProxy:
    """Forwards to the webhook; when `lose_next` is set, forwards one POST /usage and then drops
    the connection instead of answering (the webhook counted it, the client never heard)."""

    def __init__(self, target):
        proxy = self
        self.lose_next = False
        self.lost = []
        self.forwarded = []

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length", "connection")}
                answer = httpx.request(self.command, target + self.path, headers=headers, content=body, timeout=30)
                if self.command == "POST":
                    proxy.forwarded.append((self.headers["webhook-id"], body, answer.json()))
                    if proxy.lose_next:
                        proxy.lose_next = False
                        proxy.lost.append(self.headers["webhook-id"])
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                self.send_response(answer.status_code)
                for name in ("content-type", "retry-after"):
                    if name in answer.headers:
                        self.send_header(name, answer.headers[name])
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def serve(tmp_path):
    if MISSING:
        pytest.fail(f"SPENDGUARD_REQUIRE_SERVE=1 and no real webhook: {MISSING}")
    running = serve_module.Serve(tmp_path / "store")
    yield running
    running.stop()


@pytest.fixture
def standin():
    server = serve_standin("sk-it-openai", "sk-it-anthropic")
    yield server, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def counted_records(metrics, outcome):
    match = re.search(r'^spendguard_usage_records_total\{outcome="%s"\} (\d+)$' % outcome, metrics, re.M)
    return int(match.group(1)) if match else None


def window_spend(serve):
    """The daily window's spend as the store counts it, read through `spendguard status --json`."""
    status = serve.cli("status", "--json")
    windows = [w for w in status["budgets_at_risk"] if w["budget_id"] == "clients-it" and w["window"] == "daily"]
    assert len(windows) == 1, status
    return Decimal(str(windows[0]["spend"]["amount"])), status


def test_a_loop_of_sdk_calls_crosses_the_emergency_tier_and_is_counted_exactly(serve, standin):
    server, standin_url = standin
    proxy = LosingProxy(serve.url)
    errors = []
    # cache_seconds=0: each allow() reads the switch, so the call right after the crossing is refused
    guard = Guard(proxy.url, serve.usage_secret, serve.status_token, "clients/python", cache_seconds=0,
                  on_error=errors.append, fail_open=False, max_calls_per_second=1)
    client_openai = wrap_openai(openai.OpenAI(api_key="sk-it-openai", base_url=f"{standin_url}/v1", max_retries=0), guard)
    client_anthropic = wrap_anthropic(anthropic.Anthropic(api_key="sk-it-anthropic", base_url=standin_url, max_retries=0), guard)
    blocked = None
    for n in range(40):
        try:
            if n % 2:
                stream = client_anthropic.messages.create(model="claude-sonnet-4", max_tokens=64, messages=[{"role": "user", "content": "hi"}], stream=n % 4 == 1)
                if n % 4 == 1:
                    list(stream)
            else:
                stream = client_openai.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=n % 4 == 2)
                if n % 4 == 2:
                    list(stream)
        except SpendBlocked as e:
            blocked = e
            break
        if n == 3:
            proxy.lose_next = True  # this flush's answer is lost: the client sends it again
        assert guard.flush(timeout=60)
    assert blocked is not None, "40 calls did not cross the emergency tier"
    assert blocked.state == "engaged" and blocked.scope == "clients/python"
    assert "switch on clients: reason EMERGENCY: budget clients-it" in blocked.reason, blocked.reason
    with pytest.raises(SpendBlocked):
        guard.allow()
    assert not errors, errors

    calls = server.usage.calls
    assert len(calls) == n and n >= 5
    # the lost answer's batch was sent again: the same message, the same body, counted once
    assert len(proxy.lost) == 1
    replays = [(b, a) for (w, b, a) in proxy.forwarded if w == proxy.lost[0]]
    assert len(replays) == 2 and replays[0][0] == replays[1][0]
    assert replays[0][1]["accepted"] == 1 and replays[1][1] == {**replays[1][1], "accepted": 0, "duplicates": 1}

    # every call counted once, the replayed record as a duplicate (serve's /metrics)
    metrics = httpx.get(f"{serve.metrics_url}/metrics").text
    assert counted_records(metrics, "accepted") == n and counted_records(metrics, "duplicate") == 1, metrics

    spend, status = window_spend(serve)
    assert spend == sum(cost_of(c) for c in calls), status
    assert [(s["scope"], s["state"]["state"]) for s in status["kill_switches"]] == [("clients", "engaged")], status

    # restored: the switch ramps, and the client throttles to the limit factor instead of failing
    serve.cli("restore", "--scope", "clients", "--yes", "--json")
    switch = guard.status()
    assert switch is not None and switch.state == "restoring" and Decimal(switch.limit_factor) < 1, switch
    guard.allow(wait=False)  # the bucket starts with one call
    with pytest.raises(Throttled) as throttled:
        guard.allow(wait=False)
    assert throttled.value.limit_factor == switch.limit_factor
    guard.close()
