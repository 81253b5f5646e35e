"""The errors a guarded call can raise."""

from __future__ import annotations

from typing import List, Optional


class SpendguardError(Exception):
    """Base of every error this package raises."""


class SpendBlocked(SpendguardError):
    """The kill switch covering the scope is engaged: do not spend."""

    def __init__(self, scope: str, state: str, reason: str) -> None:
        super().__init__(f"spend blocked for {scope}: switch {state} ({reason})")
        self.scope = scope
        self.state = state
        self.reason = reason


class GuardUnavailable(SpendBlocked):
    """The guard could not be read and the Guard was made with fail_open=False."""

    def __init__(self, scope: str, reason: str) -> None:
        super().__init__(scope, "unknown", reason)


class Throttled(SpendguardError):
    """The switch is restoring and this call is over its share (raised only with wait=False)."""

    def __init__(self, scope: str, limit_factor: str, retry_after: float) -> None:
        super().__init__(
            f"throttled for {scope}: limit factor {limit_factor}, retry in {retry_after:.3f}s"
        )
        self.scope = scope
        self.limit_factor = limit_factor
        self.retry_after = retry_after


class ReportRejected(SpendguardError):
    """The webhook refused a batch (a 4xx other than 408/409/429): it is not retried."""

    def __init__(self, status: int, error: str, field: Optional[str], record_ids: List[str]) -> None:
        where = f" at {field}" if field else ""
        super().__init__(f"usage batch refused with {status}{where}: {error}")
        self.status = status
        self.error = error
        self.field = field
        self.record_ids = record_ids
