"""spendguard's client: check the kill switch before spending, report usage after.

    guard = Guard(url, usage_secret, status_token, scope="openai/prod/search")
    guard.allow()                      # raises SpendBlocked when the switch is engaged
    guard.report({"model": "gpt-4o", "tokens_in": 1200, "tokens_out": 350})

See docs/clients.md in the spendguard repository.
"""

from ._errors import GuardUnavailable, ReportRejected, SpendBlocked, SpendguardError, Throttled
from ._guard import Guard, Stats, SwitchStatus
from .sdk import wrap_anthropic, wrap_openai

__all__ = [
    "Guard",
    "GuardUnavailable",
    "ReportRejected",
    "SpendBlocked",
    "SpendguardError",
    "Stats",
    "SwitchStatus",
    "Throttled",
    "wrap_anthropic",
    "wrap_openai",
]
