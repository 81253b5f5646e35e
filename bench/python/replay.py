"""The Python baseline of the cold-start benchmark (bench/src/bin/coldstart.rs).

What a boto3 implementation of a spendguard function cannot do without: import boto3, create
the same AWS clients the Rust function creates (BENCH_CLIENTS), and make the same AWS calls.
The harness records the Rust function's calls for each invocation and sends them along with the
event; this handler makes each again with boto3. It has none of the function's own logic, so it
is a floor: a real Python port would take at least this long.
"""
import json
import os

import boto3
import botocore.config
import botocore.exceptions
from botocore import xform_name

CLIENTS = {name: boto3.client(name) for name in os.environ["BENCH_CLIENTS"].split(",")}


def replay(calls):
    """Makes each call; returns how many moto refused."""
    refused = 0
    for call in calls:
        service = call["service"]
        if service not in CLIENTS:
            # a client Rust does not create at start either (key-guard's hand-signed Auto Scaling
            # and regional calls): created on first use, as a Python port would; the recorded
            # Query parameters are text, which the wire format is anyway
            CLIENTS[service] = boto3.client(
                service, config=botocore.config.Config(parameter_validation=False)
            )
        method = getattr(CLIENTS[service], xform_name(call["operation"]))
        try:
            method(**call["params"])
        except botocore.exceptions.ClientError:
            # a conditional write the Rust run already made: refused, as it would be on a retry
            refused += 1
    return refused


# what the Rust function does at start-up (for example reading a secret), done here too
replay(json.loads(os.environ.get("BENCH_INIT_CALLS", "[]")))


def handler(event, context):
    return {"calls": len(event["replay"]), "refused": replay(event["replay"])}
