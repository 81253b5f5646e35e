"""DynamoDB's TransactGetItems limit in moto: 100 items, as DynamoDB documents (raised from 25
in 2022). moto 5.x still refuses more than 25 (`TRANSACTION_MAX_ITEMS` in
moto/dynamodb/responses.py, read only by `transact_get_items` when it is called), so a store
that reads the service's 100 in one snapshot would fail on moto alone.
"""

import moto.dynamodb.responses as dynamodb_responses

# https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_TransactGetItems.html
DYNAMODB_TRANSACT_GET_MAX = 100


def install() -> None:
    # fail loudly if moto renames it: the limit would silently stay 25
    if not hasattr(dynamodb_responses, "TRANSACTION_MAX_ITEMS"):
        raise RuntimeError("moto.dynamodb.responses.TRANSACTION_MAX_ITEMS is gone: review transact_get_limit.py")
    dynamodb_responses.TRANSACTION_MAX_ITEMS = DYNAMODB_TRANSACT_GET_MAX
