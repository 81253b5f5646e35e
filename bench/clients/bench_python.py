"""The Python client's overhead (docs/performance.md#clients): figures, never assertions.

    clients/.venv/bin/python bench/clients/bench_python.py

- allow() with a warm cache (the switch read once, then served from the 5 s cache)
- the OpenAI wrapper's added work per call: allow(), reading the usage, report(); the SDK's
  `create` replaced by one returning a prebuilt ChatCompletion, so only the wrapper is timed
- report() per record (the caller's cost), and records/s flushed to a local sink over HTTP
"""

import statistics
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from openai.types.chat import ChatCompletion

from spendguard import Guard, wrap_openai

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class Sink(BaseHTTPRequestHandler):
    """The webhook's answers without its work: open on /status, 200 on /usage."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self._answer(b'{"scope":"bench","state":"open","limit_factor":"1"}')

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.records += body.count(b'"id":')
        self._answer(b'{"accepted":1,"duplicates":0,"alerts_published":0}')

    def _answer(self, data):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def per_call_us(fn, n, rounds=5):
    """The median over rounds of the mean time per call, in µs."""
    results = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        results.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(results)


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    server.records = 0
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"

    guard = Guard(url, SECRET, "t" * 40, "bench/python", flush_interval=3600, max_queue=1_000_000)
    guard.allow()  # warm
    allow_us = per_call_us(guard.allow, 200_000)

    completion = ChatCompletion.model_validate({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1200, "completion_tokens": 350, "total_tokens": 1550, "prompt_tokens_details": {"cached_tokens": 200}},
    })
    counter = iter(range(10**9))

    def create(**kwargs):
        completion._request_id = f"req_{next(counter)}"
        return completion

    class Completions:
        pass

    class Chat:
        completions = Completions()

    class Client:
        chat = Chat()

    Client.chat.completions.create = staticmethod(create)
    wrapped = wrap_openai(Client(), guard)
    bare_us = per_call_us(lambda: Client.chat.completions.create(model="gpt-4o", messages=[]), 50_000)
    wrapped_us = per_call_us(lambda: wrapped.chat.completions.create(model="gpt-4o", messages=[]), 50_000)
    guard.flush(timeout=120)

    n = 100_000
    record = {"model": "gpt-4o", "tokens_in": 1200, "tokens_out": 350, "provider": "openai"}
    before = server.records
    start = time.perf_counter()
    for _ in range(n):
        guard.report(record)
    queued = time.perf_counter() - start
    assert guard.flush(timeout=300)
    flushed = time.perf_counter() - start
    sent = server.records - before
    guard.close()
    server.shutdown()

    print("| Python client (" + sys.version.split()[0] + ") | figure |")
    print("|---|---:|")
    print(f"| `allow()`, warm cache | {allow_us:.2f} µs |")
    print(f"| wrapper's added work per OpenAI call (allow + usage + report) | {wrapped_us - bare_us:.1f} µs |")
    print(f"| `report()` per record (the caller's cost) | {queued / n * 1e6:.1f} µs ({n / queued:,.0f} records/s queued) |")
    print(f"| {n:,} records queued and flushed to a local sink | {flushed:.2f} s ({sent / flushed:,.0f} records/s, {guard.stats.batches_sent} signed batches) |")
    if sent != n:
        print(f"| (records the sink received) | {sent} of {n} |")


if __name__ == "__main__":
    main()
