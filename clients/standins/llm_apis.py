"""Local stand-ins of the OpenAI and Anthropic APIs for the clients' tests (stdlib only).

    python llm_apis.py --openai-key sk-test --anthropic-key sk-ant-test
    -> prints {"listening": "127.0.0.1:PORT"} on stdout, serves until killed (or stdin closes)

They refuse what the real APIs refuse, with the documented error shapes: another method or path
(OpenAI 404 "Invalid URL", Anthropic 404 not_found_error), the wrong authentication (OpenAI wants
`Authorization: Bearer`, Anthropic `x-api-key` — or the bearer token its Python SDK 2.x sends — plus
`anthropic-version`), a malformed body (400).
They answer with realistic usage, different on every call (streaming SSE included), and keep
what they answered: `GET /_standin/usage` lists each call's request id, model and usage.
"""

import argparse
import itertools
import json
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# the versions Anthropic's API is known to take: the one FACTS.md documents, and the one the pinned
# SDKs (anthropic 2.17.0, @anthropic-ai/sdk 1.17.0) send (ADR 033)
ANTHROPIC_VERSIONS = {"2023-06-01", "2026-10-21"}
ANSWER_TEXT = ["Spend", " is", " guarded", "."]


class Usage:
    """Deterministic, different usage per call (so a lost or doubled report shows)."""

    def __init__(self):
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        self.calls = []

    def next(self, provider, model, request_id, stream):
        n = next(self._counter)
        usage = {
            "input": 900 + 37 * n,
            "cached": 128 * (n % 3),
            "cache_write": 64 * (n % 2) if provider == "anthropic" else 0,
            "output": 150 + 11 * n,
        }
        with self._lock:
            self.calls.append({"provider": provider, "model": model, "request_id": request_id, "stream": stream, "usage": usage})
        return usage


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "standin"

    def log_message(self, *args):  # quiet: the tests read answers, not access logs
        pass

    # -- routing ------------------------------------------------------------------------------

    def do_GET(self):
        if self.path == "/_standin/usage":
            return self._json(200, {"calls": self.server.usage.calls})
        self._refuse_route()

    def do_POST(self):
        if self.path == "/v1/chat/completions":
            return self._openai_chat()
        if self.path == "/v1/messages":
            return self._anthropic_messages()
        self._refuse_route()

    def do_PUT(self):
        self._refuse_route()

    do_DELETE = do_PATCH = do_PUT

    def _refuse_route(self):
        self._drain()
        if self.path.startswith("/v1/messages") or self.headers.get("x-api-key") is not None:
            return self._anthropic_error(404, "not_found_error", "Not found")
        self._openai_error(404, f"Invalid URL ({self.command} {self.path})", "invalid_request_error", None)

    # -- OpenAI -------------------------------------------------------------------------------

    def _openai_chat(self):
        body = self._body()
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return self._openai_error(
                401,
                "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                "invalid_request_error",
                None,
            )
        if auth[len("Bearer ") :] != self.server.openai_key:
            return self._openai_error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        if not isinstance(body, dict):
            return self._openai_error(400, "We could not parse the JSON body of your request.", "invalid_request_error", None)
        for field, kind in (("model", str), ("messages", list)):
            if not isinstance(body.get(field), kind):
                return self._openai_error(400, f"Missing required parameter: '{field}'.", "invalid_request_error", "missing_required_parameter", field)
        model = body["model"]
        request_id = f"req_{uuid.uuid4().hex}"
        stream = bool(body.get("stream"))
        usage = self.server.usage.next("openai", model, request_id, stream)
        wire_usage = {
            "prompt_tokens": usage["input"] + usage["cached"],  # OpenAI counts cached tokens in the prompt
            "completion_tokens": usage["output"],
            "total_tokens": usage["input"] + usage["cached"] + usage["output"],
            "prompt_tokens_details": {"cached_tokens": usage["cached"], "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
        }
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        headers = {"x-request-id": request_id, "openai-processing-ms": "12"}
        if not stream:
            return self._json(
                200,
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(ANSWER_TEXT), "refusal": None}, "logprobs": None, "finish_reason": "stop"}],
                    "usage": wire_usage,
                    "service_tier": "default",
                    "system_fingerprint": "fp_standin",
                },
                headers,
            )
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        base = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model, "system_fingerprint": "fp_standin"}
        chunks = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}]}]
        chunks += [{**base, "choices": [{"index": 0, "delta": {"content": t}, "logprobs": None, "finish_reason": None}]} for t in ANSWER_TEXT]
        chunks.append({**base, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]})
        if include_usage:
            for chunk in chunks:
                chunk["usage"] = None
            chunks.append({**base, "choices": [], "usage": wire_usage})
        self._sse(headers, [(None, c) for c in chunks] + [(None, "[DONE]")])

    def _openai_error(self, status, message, kind, code, param=None):
        self._json(status, {"error": {"message": message, "type": kind, "param": param, "code": code}})

    # -- Anthropic ----------------------------------------------------------------------------

    def _anthropic_messages(self):
        body = self._body()
        key = self.headers.get("x-api-key")
        auth = self.headers.get("Authorization", "")
        if key is None and auth.startswith("Bearer "):
            # anthropic-sdk-python 2.x sends the API key as a bearer token (its _api_key_auth)
            key = auth[len("Bearer ") :]
        if key is None:
            return self._anthropic_error(401, "authentication_error", "x-api-key header is required")
        if key != self.server.anthropic_key:
            return self._anthropic_error(401, "authentication_error", "invalid x-api-key")
        version = self.headers.get("anthropic-version")
        if not version:
            return self._anthropic_error(400, "invalid_request_error", "anthropic-version: header is required")
        if version not in ANTHROPIC_VERSIONS:
            return self._anthropic_error(400, "invalid_request_error", f"anthropic-version: {version!r} is not a valid version")
        if not isinstance(body, dict):
            return self._anthropic_error(400, "invalid_request_error", "Request body is not valid JSON")
        for field, kind in (("model", str), ("max_tokens", int), ("messages", list)):
            if not isinstance(body.get(field), kind):
                return self._anthropic_error(400, "invalid_request_error", f"{field}: Field required")
        model = body["model"]
        request_id = f"req_{uuid.uuid4().hex}"
        stream = bool(body.get("stream"))
        usage = self.server.usage.next("anthropic", model, request_id, stream)
        message_id = f"msg_{uuid.uuid4().hex[:24]}"
        wire_usage = {
            "input_tokens": usage["input"],  # Anthropic's input_tokens exclude cache reads and writes
            "cache_creation_input_tokens": usage["cache_write"],
            "cache_read_input_tokens": usage["cached"],
            "output_tokens": usage["output"],
            "service_tier": "standard",
        }
        headers = {"request-id": request_id}
        message = {"id": message_id, "type": "message", "role": "assistant", "model": model, "stop_reason": "end_turn", "stop_sequence": None}
        if not stream:
            return self._json(200, {**message, "content": [{"type": "text", "text": "".join(ANSWER_TEXT)}], "usage": wire_usage}, headers)
        events = [
            ("message_start", {"type": "message_start", "message": {**message, "content": [], "stop_reason": None, "usage": {**wire_usage, "output_tokens": 1}}}),
            ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ("ping", {"type": "ping"}),
        ]
        events += [("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}) for t in ANSWER_TEXT]
        events += [
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": {"output_tokens": usage["output"]}}),
            ("message_stop", {"type": "message_stop"}),
        ]
        self._sse(headers, events)

    def _anthropic_error(self, status, kind, message):
        self._json(status, {"type": "error", "error": {"type": kind, "message": message}, "request_id": f"req_{uuid.uuid4().hex}"})

    # -- HTTP ---------------------------------------------------------------------------------

    def _drain(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _body(self):
        try:
            return json.loads(self._drain())
        except ValueError:
            return None

    def _json(self, status, document, headers=None):
        data = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _sse(self, headers, events):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        for event, data in events:
            text = data if isinstance(data, str) else json.dumps(data)
            frame = (f"event: {event}\n" if event else "") + f"data: {text}\n\n"
            self.wfile.write(frame.encode())
            self.wfile.flush()
        self.close_connection = True


def serve(openai_key, anthropic_key, port=0):
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.openai_key = openai_key
    server.anthropic_key = anthropic_key
    server.usage = Usage()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--openai-key", required=True)
    parser.add_argument("--anthropic-key", required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = serve(args.openai_key, args.anthropic_key, args.port)
    print(json.dumps({"listening": f"127.0.0.1:{server.server_address[1]}"}), flush=True)
    sys.stdin.read()  # until the test closes our stdin (or dies)


if __name__ == "__main__":
    main()
