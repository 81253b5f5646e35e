"""moto in server mode, made linearizable for DynamoDB.

Real DynamoDB applies each conditional write atomically. moto's threaded server evaluates a
condition and applies the write in Python without a lock, so two concurrent requests can both
pass a condition. This launcher serialises DynamoDB requests (and only those: SNS delivers to
HTTP endpoints synchronously, and those endpoints may call back into moto) so that the
emulator gives the same guarantee as the service. Everything else is moto's own server.

One adaptation to the machine: moto's model dump (`/moto-api/data.json`, where tests read the
e-mails SES accepted) reads every attribute of every model, and a Lambda function's
`docker_client` connects to Docker, which is not installed here; without Docker that attribute
is reported absent instead of failing the whole dump.

A second adaptation, to speed only: moto backs up a transaction's table before a
`TransactWriteItems` (to restore it if the transaction is cancelled), but deep-copies the table
once per action instead of once per table: a 100-action transaction copied its table 100 times,
seconds on a large table. `table_backups.py` makes the repeated copies of one table in one
transaction the same copy; what is restored on a cancellation is unchanged.

A third adaptation, to the service's own behaviour: moto ignores `TransactWriteItems`'s
`ClientRequestToken`, so a transaction the SDK sent again after its attempt timed out was
applied twice (`client_tokens.py` answers a retry as DynamoDB does).

Another adaptation to the machine: werkzeug listens with a queue of 128 connections, and a
test that runs 50 checks at once (each querying the 16 shards of the pending index at once)
opens 800: the connections beyond the queue timed out, which DynamoDB's endpoint does not do.
The queue is raised to `LISTEN_QUEUE` (the kernel caps it at `net.core.somaxconn`).

And one to the service's documented limits: moto 5.x refuses a TransactGetItems of
more than 25 items, DynamoDB's limit until 2022; DynamoDB now takes 100, and so does
`DynamoStore` (`transact_get_limit.py` raises moto's limit to 100).

Two additions: IAM service-specific credentials (Amazon Bedrock API keys), which moto lacks
(`service_credentials.py`), and AWS's managed policy AWSDenyAll, which moto loads only on
request (`aws_managed.py`).

Usage: python server.py PORT
"""

import sys
import threading

import werkzeug.serving
from werkzeug.serving import run_simple

from moto.utilities.docker_utilities import DockerModel

import aws_managed
import service_credentials
import table_backups
from client_tokens import ClientTokens
import transact_get_limit
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)

_dynamodb = threading.Lock()
LISTEN_QUEUE = 1024
werkzeug.serving.BaseWSGIServer.request_queue_size = LISTEN_QUEUE
_docker_client = DockerModel.docker_client


def _docker_client_or_absent(model):
    try:
        return _docker_client.fget(model)
    except Exception as e:  # docker.errors.DockerException: no Docker daemon
        raise AttributeError(f"no Docker on this machine: {e}") from e


DockerModel.docker_client = property(_docker_client_or_absent)
service_credentials.install()
aws_managed.install()
table_backups.install()
transact_get_limit.install()


class SerializedDynamoDB:
    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target.startswith("DynamoDB_"):
            with _dynamodb:
                # materialise the response while holding the lock
                return list(self.app(environ, start_response))
        return self.app(environ, start_response)


def main() -> None:
    port = int(sys.argv[1])
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(
        "127.0.0.1",
        port,
        SerializedDynamoDB(ClientTokens(app)),
        threaded=True,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
