import logging

import httpx
import pytest

from spendguard import GuardUnavailable, SpendBlocked, Throttled


def test_open_switch_allows_and_is_read_once_per_cache_period(make_guard, webhook, clock):
    guard = make_guard(cache_seconds=5.0)
    for _ in range(100):
        guard.allow()
    assert webhook.status_reads == 1
    clock.now += 4.9
    guard.allow()
    assert webhook.status_reads == 1
    clock.now += 0.2
    guard.allow()
    assert webhook.status_reads == 2


def test_engaged_switch_raises_spend_blocked_with_scope_state_and_reason(make_guard, webhook):
    webhook.status = {"state": "engaged", "limit_factor": "0", "switch_scope": "openai", "detail": {"reason": "emergency tier of openai-daily"}}
    guard = make_guard()
    with pytest.raises(SpendBlocked) as raised:
        guard.allow()
    assert raised.value.scope == "openai/prod"
    assert raised.value.state == "engaged"
    assert "openai" in raised.value.reason and "emergency tier of openai-daily" in raised.value.reason


def test_engaged_is_seen_only_after_the_cache_expires(make_guard, webhook, clock):
    guard = make_guard(cache_seconds=5.0)
    guard.allow()
    webhook.status = {"state": "engaged", "limit_factor": "0"}
    guard.allow()  # still the cached open switch
    clock.now += 5.0
    with pytest.raises(SpendBlocked):
        guard.allow()


def test_restoring_throttles_to_the_limit_factor(make_guard, webhook, clock):
    webhook.status = {"state": "restoring", "limit_factor": "0.25"}
    guard = make_guard(max_calls_per_second=8.0, cache_seconds=3600)
    # 8/s * 0.25 = 2 calls a second, at most one second of them at once
    guard.allow(wait=False)
    guard.allow(wait=False)
    with pytest.raises(Throttled) as raised:
        guard.allow(wait=False)
    assert raised.value.limit_factor == "0.25"
    assert raised.value.retry_after == pytest.approx(0.5)
    # waiting instead: 10 more calls take 5 s of the (fake) clock, never more than the rate
    start = clock.now
    for _ in range(10):
        guard.allow()
    assert clock.now - start == pytest.approx(5.0)
    assert guard.stats.throttled_waits == 10


def test_back_to_open_stops_throttling(make_guard, webhook, clock):
    webhook.status = {"state": "restoring", "limit_factor": "0.1"}
    guard = make_guard(max_calls_per_second=1.0, cache_seconds=1.0)
    guard.allow(wait=False)
    with pytest.raises(Throttled):
        guard.allow(wait=False)
    webhook.status = {"state": "open", "limit_factor": "1"}
    clock.now += 1.0
    for _ in range(50):
        guard.allow(wait=False)


def test_unreachable_guard_fails_open_by_default_warning_once_per_outage(make_guard, webhook, clock, caplog):
    webhook.status_error = httpx.ConnectError("connection refused")
    guard = make_guard(cache_seconds=5.0)
    with caplog.at_level(logging.WARNING, logger="spendguard"):
        for _ in range(3):
            guard.allow()
            clock.now += 2.0  # past the retry delay: the guard is asked again each time
    warnings = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
    assert len(warnings) == 1 and "ALLOWED (fail-open)" in warnings[0]
    assert guard.stats.outages == 1
    assert guard.stats.guard_unreachable == 3
    assert guard.stats.allowed_while_unreachable == 3
    # it answers again, then fails again: a second outage, a second warning
    webhook.status_error = None
    clock.now += 2.0
    guard.allow()
    webhook.status_error = httpx.ConnectError("connection refused")
    clock.now += 6.0
    with caplog.at_level(logging.WARNING, logger="spendguard"):
        guard.allow()
    assert guard.stats.outages == 2
    assert len([r for r in caplog.records if "cannot be read" in r.getMessage()]) == 2


def test_unreachable_guard_is_not_asked_on_every_call(make_guard, webhook, clock):
    webhook.status_error = httpx.ConnectError("connection refused")
    guard = make_guard()
    for _ in range(20):
        guard.allow()
    assert webhook.status_reads == 1


def test_fail_closed_raises_guard_unavailable(make_guard, webhook):
    webhook.status_error = httpx.ConnectError("connection refused")
    guard = make_guard(fail_open=False)
    with pytest.raises(GuardUnavailable) as raised:
        guard.allow()
    assert isinstance(raised.value, SpendBlocked)
    assert "connection refused" in raised.value.reason


def test_a_wrong_status_token_is_an_outage_not_an_open_switch(make_guard, webhook):
    from spendguard import Guard

    guard = Guard("http://guard.test", "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "wrong-token", "openai/prod",
                  fail_open=False, transport=httpx.MockTransport(webhook.handle))
    try:
        with pytest.raises(GuardUnavailable) as raised:
            guard.allow()
        assert "401" in raised.value.reason
        assert "wrong-token" not in str(raised.value)
    finally:
        guard.close()


def test_bad_options_are_refused_naming_them():
    from spendguard import Guard

    with pytest.raises(ValueError, match="^scope"):
        Guard("http://x", "whsec_eA==", "t", "")
    with pytest.raises(ValueError, match="^max_calls_per_second"):
        Guard("http://x", "whsec_eA==", "t", "a", max_calls_per_second=0)


def test_a_guard_that_times_out_is_not_waited_for_on_every_call(make_guard, webhook, clock):
    def times_out(request):
        webhook.status_reads += 1
        clock.now += 2.0  # the request's timeout
        raise httpx.ConnectTimeout("timed out", request=request)

    guard = make_guard(transport=httpx.MockTransport(times_out))
    guard.allow()
    guard.allow()
    assert webhook.status_reads == 1


def test_a_call_waiting_for_its_turn_sees_the_switch_engage_meanwhile(make_guard, webhook, clock):
    webhook.status = {"state": "restoring", "limit_factor": "0.1"}

    def sleep_while_the_switch_engages(seconds):
        clock.sleep(seconds)
        webhook.status = {"state": "engaged", "limit_factor": "0"}

    guard = make_guard(cache_seconds=0.5, sleep=sleep_while_the_switch_engages)
    guard.allow()  # the one call the bucket holds at 10/s x 0.1
    with pytest.raises(SpendBlocked):
        guard.allow()  # waits a second for its turn; the switch engaged meanwhile


def test_an_async_call_waiting_for_its_turn_sees_the_switch_engage_meanwhile(make_guard, webhook, clock, monkeypatch):
    import asyncio

    webhook.status = {"state": "restoring", "limit_factor": "0.1"}

    async def sleep_while_the_switch_engages(seconds):
        clock.sleep(seconds)
        webhook.status = {"state": "engaged", "limit_factor": "0"}

    monkeypatch.setattr(asyncio, "sleep", sleep_while_the_switch_engages)
    guard = make_guard(cache_seconds=0.5)

    async def two_calls():
        await guard.allow_async()
        await guard.allow_async()

    with pytest.raises(SpendBlocked):
        asyncio.run(two_calls())


def test_configuration_mistakes_are_refused_naming_the_argument():
    from spendguard import Guard

    with pytest.raises(ValueError, match="^url"):
        Guard("guard.example.com", "whsec_eA==", "t", "a")
    with pytest.raises(ValueError, match="^url"):
        Guard("ftp://guard.example.com", "whsec_eA==", "t", "a")
    with pytest.raises(ValueError, match="^status_token"):
        Guard("https://guard.example.com", "whsec_eA==", "", "a")


def test_a_refused_status_token_is_logged_as_an_error(make_guard, webhook, caplog):
    from spendguard import Guard

    guard = Guard("http://guard.test", "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "wrong-token", "openai/prod",
                  transport=httpx.MockTransport(webhook.handle))
    try:
        with caplog.at_level(logging.WARNING, logger="spendguard"):
            guard.allow()
        [entry] = [r for r in caplog.records if "cannot be read" in r.getMessage()]
        assert entry.levelno == logging.ERROR and "401" in entry.getMessage()
    finally:
        guard.close()


@pytest.mark.parametrize("factor", ["abc", "nan", "inf", "-0.5", "1.5", ""])
def test_a_limit_factor_that_is_not_a_decimal_from_0_to_1_is_an_outage(make_guard, webhook, caplog, factor):
    webhook.status = {"state": "restoring", "limit_factor": factor}
    guard = make_guard(fail_open=False)
    with caplog.at_level(logging.WARNING, logger="spendguard"), pytest.raises(GuardUnavailable) as raised:
        guard.allow()
    assert "limit_factor" in raised.value.reason
    assert guard.stats.guard_unreachable == 1 and "limit_factor" in caplog.text
