"""One backup per table per DynamoDB transaction in moto.

moto's `DynamoDBBackend.transact_write_items` deep-copies the table of every action before it
applies any (its rollback on a cancelled transaction), so a table is copied as many times as
the transaction has actions on it, each copy identical since nothing was applied yet. Within one
transaction this makes every copy of a table after the first the first one. Requests to
DynamoDB are serialised by server.py, so one transaction runs at a time.
"""

import copy

import moto.dynamodb.models as dynamodb_models


class _TableBackups:
    """Stands for the `copy` module inside moto's DynamoDB models."""

    def __init__(self) -> None:
        self.in_transaction: dict[int, object] | None = None

    def deepcopy(self, value, memo=None):
        if self.in_transaction is None or not isinstance(value, dynamodb_models.Table):
            return copy.deepcopy(value, memo)
        if id(value) not in self.in_transaction:
            self.in_transaction[id(value)] = copy.deepcopy(value, memo)
        return self.in_transaction[id(value)]

    def __getattr__(self, name):
        return getattr(copy, name)


def install() -> None:
    backups = _TableBackups()
    transact = dynamodb_models.DynamoDBBackend.transact_write_items

    def transact_with_one_backup_per_table(self, transact_items):
        backups.in_transaction = {}
        try:
            return transact(self, transact_items)
        finally:
            backups.in_transaction = None

    dynamodb_models.copy = backups
    dynamodb_models.DynamoDBBackend.transact_write_items = transact_with_one_backup_per_table
