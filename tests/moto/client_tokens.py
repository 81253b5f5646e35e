"""DynamoDB's `ClientRequestToken` for moto: a retried `TransactWriteItems` is not applied twice.

DynamoDB makes `TransactWriteItems` idempotent on its `ClientRequestToken`: for 10 minutes after
a call with a token succeeded, a call with the same token and the same parameters succeeds again
without changing anything, and one with other parameters is refused with
`IdempotentParameterMismatchException`. moto ignores the token. Under load a test's request can
wait longer than the SDK's attempt timeout behind the serialised DynamoDB requests; the SDK then
sends it again, moto applies both, and the second is cancelled on conditions the first made
true (an ingest's usage markers): records counted once were reported as duplicates. This
middleware answers such a retry as DynamoDB does, and refuses a token outside DynamoDB's
bounds (1 to 36 characters) as DynamoDB does. It runs inside server.py's DynamoDB lock.
"""

import hashlib
import io
import json
import time

TARGET = "DynamoDB_20120810.TransactWriteItems"
VALID_SECONDS = 600
# DynamoDB's documented bounds of a ClientRequestToken: 1 to 36 characters
MAX_TOKEN_LENGTH = 36


class ClientTokens:
    def __init__(self, app):
        self.app = app
        # token -> (when it succeeded, digest of the parameters, status, headers, body)
        self.done: dict[str, tuple[float, str, str, list, list[bytes]]] = {}

    def __call__(self, environ, start_response):
        if environ.get("HTTP_X_AMZ_TARGET", "") != TARGET:
            return self.app(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(body)
        try:
            params = json.loads(body)
        except ValueError:
            return self.app(environ, start_response)
        token = params.pop("ClientRequestToken", None)
        if token is None:
            return self.app(environ, start_response)
        if not isinstance(token, str) or not 1 <= len(token) <= MAX_TOKEN_LENGTH:
            return _refused(
                start_response,
                "ValidationException",
                "1 validation error detected: Value at 'clientRequestToken' failed to satisfy "
                f"constraint: Member must have length less than or equal to {MAX_TOKEN_LENGTH}",
            )
        digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
        now = time.monotonic()
        self.done = {t: d for t, d in self.done.items() if now - d[0] < VALID_SECONDS}
        if token in self.done:
            _, seen, status, headers, chunks = self.done[token]
            if seen != digest:
                return _mismatch(start_response)
            start_response(status, headers)
            return chunks
        answered = {}

        def remember(status, headers, exc_info=None):
            answered["status"], answered["headers"] = status, headers
            return start_response(status, headers, exc_info)

        chunks = list(self.app(environ, remember))
        if answered.get("status", "").startswith("200"):
            self.done[token] = (now, digest, answered["status"], answered["headers"], chunks)
        return chunks


def _mismatch(start_response):
    return _refused(
        start_response,
        "IdempotentParameterMismatchException",
        "The request uses the same client token as a previous, but non-identical request.",
    )


def _refused(start_response, error, message):
    body = json.dumps(
        {"__type": f"com.amazonaws.dynamodb.v20120810#{error}", "message": message}
    ).encode()
    start_response(
        "400 Bad Request",
        [("Content-Type", "application/x-amz-json-1.0"), ("Content-Length", str(len(body)))],
    )
    return [body]
