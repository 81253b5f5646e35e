"""The wrappers with the official SDKs, pointed at local stand-ins of the OpenAI and Anthropic APIs."""

import anthropic
import openai
import pytest

from llm_apis import serve
from spendguard import SpendBlocked, wrap_anthropic, wrap_openai

OPENAI_KEY = "sk-test-openai-key"
ANTHROPIC_KEY = "sk-ant-test-key"


@pytest.fixture(scope="module")
def standin():
    server = serve(OPENAI_KEY, ANTHROPIC_KEY)
    yield server, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def last_call(server):
    return server.usage.calls[-1]


def openai_client(url, key=OPENAI_KEY):
    return openai.OpenAI(api_key=key, base_url=f"{url}/v1", max_retries=0)


def anthropic_client(url, key=ANTHROPIC_KEY):
    return anthropic.Anthropic(api_key=key, base_url=url, max_retries=0)


def test_openai_call_is_reported_with_its_usage_and_request_id(standin, make_guard, webhook):
    server, url = standin
    guard = make_guard()
    client = wrap_openai(openai_client(url), guard)
    answer = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == "Spend is guarded."
    assert guard.flush(timeout=10)
    call = last_call(server)
    assert webhook.counted[call["request_id"]] == {
        "id": call["request_id"], "scope": "openai/prod", "provider": "openai", "model": "gpt-4o", "requests": 1,
        "tokens_in": call["usage"]["input"], "tokens_cached": call["usage"]["cached"], "tokens_out": call["usage"]["output"],
        "timestamp": webhook.counted[call["request_id"]]["timestamp"],
    }


def test_openai_stream_is_reported_from_its_last_chunk(standin, make_guard, webhook):
    server, url = standin
    guard = make_guard()
    client = wrap_openai(openai_client(url), guard)
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "Spend is guarded."
    assert guard.flush(timeout=10)
    call = last_call(server)
    assert call["stream"]
    counted = webhook.counted[call["request_id"]]
    assert (counted["model"], counted["tokens_in"], counted["tokens_cached"], counted["tokens_out"]) == (
        "gpt-4o-mini", call["usage"]["input"], call["usage"]["cached"], call["usage"]["output"])


def test_openai_stream_reads_like_the_sdks_own_when_usage_was_not_asked_for(standin, make_guard, webhook):
    server, url = standin
    guard = make_guard()
    client = wrap_openai(openai_client(url), guard)
    stream = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True)
    # caller code written for the plain SDK: every chunk has a choice
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    assert text == "Spend is guarded."
    assert guard.flush(timeout=10)
    assert webhook.counted[last_call(server)["request_id"]]["tokens_out"] == last_call(server)["usage"]["output"]
    # asked for: the usage chunk is the caller's
    stream = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True,
                                            stream_options={"include_usage": True})
    assert list(stream)[-1].choices == []


def test_anthropic_call_and_stream_are_reported(standin, make_guard, webhook):
    server, url = standin
    guard = make_guard()
    client = wrap_anthropic(anthropic_client(url), guard)
    message = client.messages.create(model="claude-sonnet-4", max_tokens=64, messages=[{"role": "user", "content": "hi"}])
    assert message.content[0].text == "Spend is guarded."
    plain = last_call(server)
    events = list(client.messages.create(model="claude-sonnet-4", max_tokens=64, messages=[{"role": "user", "content": "hi"}], stream=True))
    assert events[-1].type == "message_stop"
    streamed = last_call(server)
    assert guard.flush(timeout=10)
    for call in (plain, streamed):
        counted = webhook.counted[call["request_id"]]
        assert (counted["provider"], counted["model"], counted["tokens_in"], counted["tokens_cached"], counted["tokens_cache_write"], counted["tokens_out"]) == (
            "anthropic", "claude-sonnet-4", call["usage"]["input"], call["usage"]["cached"], call["usage"]["cache_write"], call["usage"]["output"])


def test_a_stream_closed_early_is_still_reported_as_a_request(standin, make_guard, webhook):
    server, url = standin
    guard = make_guard()
    client = wrap_openai(openai_client(url), guard)
    with client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True) as stream:
        next(iter(stream))
    assert guard.flush(timeout=10)
    counted = webhook.counted[last_call(server)["request_id"]]
    assert counted["requests"] == 1 and counted["provider"] == "openai"


def test_a_stream_dropped_without_being_read_is_reported_as_a_request_with_a_warning(standin, make_guard, webhook, caplog):
    import gc
    import logging

    server, url = standin
    guard = make_guard()
    client = wrap_openai(openai_client(url), guard)
    with caplog.at_level(logging.WARNING, logger="spendguard"):
        stream = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True)
        del stream
        gc.collect()
    assert guard.flush(timeout=10)
    counted = webhook.counted[last_call(server)["request_id"]]
    assert counted["requests"] == 1 and counted["provider"] == "openai"
    assert "stream ended before its usage" in caplog.text


def test_an_engaged_switch_stops_the_call_before_it_reaches_the_provider(standin, make_guard, webhook):
    server, url = standin
    webhook.status = {"state": "engaged", "limit_factor": "0", "switch_scope": "openai"}
    guard = make_guard()
    before = len(server.usage.calls)
    with pytest.raises(SpendBlocked):
        wrap_openai(openai_client(url), guard).chat.completions.create(model="gpt-4o", messages=[])
    with pytest.raises(SpendBlocked):
        wrap_anthropic(anthropic_client(url), guard).messages.create(model="claude-sonnet-4", max_tokens=1, messages=[])
    assert len(server.usage.calls) == before


def test_copies_parse_and_stream_helpers_do_not_get_around_the_switch(standin, make_guard, webhook):
    server, url = standin
    webhook.status = {"state": "engaged", "limit_factor": "0", "switch_scope": "openai"}
    guard = make_guard()
    before = len(server.usage.calls)
    client = wrap_openai(openai_client(url), guard)
    messages = [{"role": "user", "content": "hi"}]
    for copy in (client.with_options(timeout=5), client.copy(max_retries=0)):
        with pytest.raises(SpendBlocked):
            copy.chat.completions.create(model="gpt-4o", messages=messages)
    with pytest.raises(SpendBlocked):
        client.chat.completions.parse(model="gpt-4o", messages=messages)
    with pytest.raises(NotImplementedError, match="create"):
        client.chat.completions.stream(model="gpt-4o", messages=messages)
    claude = wrap_anthropic(anthropic_client(url), guard)
    with pytest.raises(SpendBlocked):
        claude.with_options(timeout=5).messages.create(model="claude-sonnet-4", max_tokens=8, messages=messages)
    with pytest.raises(SpendBlocked):
        claude.messages.parse(model="claude-sonnet-4", max_tokens=8, messages=messages)
    with pytest.raises(NotImplementedError, match="create"):
        claude.messages.stream(model="claude-sonnet-4", max_tokens=8, messages=messages)
    assert len(server.usage.calls) == before


def test_parse_is_reported_like_create(standin, make_guard, webhook):
    server, url = standin
    guard = make_guard()
    wrap_openai(openai_client(url), guard).with_options(timeout=5).chat.completions.parse(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert guard.flush(timeout=10)
    assert webhook.counted[last_call(server)["request_id"]]["tokens_out"] == last_call(server)["usage"]["output"]


def test_a_wrapped_call_the_provider_answered_never_raises_for_its_report(standin, make_guard, caplog):
    import logging

    server, url = standin
    guard = make_guard()
    client = wrap_openai(openai_client(url), guard)
    guard.allow()  # the switch read while the guard was open (cached)
    guard.close(1)
    with caplog.at_level(logging.ERROR, logger="spendguard"):
        answer = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == "Spend is guarded."
    assert guard.stats.reports_lost == 1
    assert "report() after close()" in caplog.text and last_call(server)["request_id"] in caplog.text


def test_other_client_attributes_pass_through(standin, make_guard):
    _, url = standin
    client = wrap_openai(openai_client(url), make_guard())
    assert client.api_key == OPENAI_KEY
    assert str(client.base_url).startswith(url)


# the stand-ins refuse what the real APIs refuse, as the SDKs see it

def test_standin_refuses_a_wrong_key_and_a_malformed_body(standin):
    _, url = standin
    with pytest.raises(openai.AuthenticationError) as raised:
        openai_client(url, key="sk-wrong").chat.completions.create(model="gpt-4o", messages=[])
    assert raised.value.body["code"] == "invalid_api_key"
    with pytest.raises(openai.BadRequestError):
        openai_client(url).chat.completions.create(model="gpt-4o", messages="not a list")
    with pytest.raises(anthropic.AuthenticationError) as raised:
        anthropic_client(url, key="sk-ant-wrong").messages.create(model="claude-sonnet-4", max_tokens=1, messages=[])
    assert raised.value.body["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.BadRequestError):
        anthropic_client(url).messages.create(model="claude-sonnet-4", max_tokens=1, messages="not a list")


def test_standin_refuses_the_other_providers_auth_and_unknown_routes(standin):
    import httpx

    _, url = standin
    openai_key_to_anthropic = httpx.post(f"{url}/v1/messages", headers={"Authorization": f"Bearer {OPENAI_KEY}", "anthropic-version": "2023-06-01"},
                                         json={"model": "m", "max_tokens": 1, "messages": []})
    assert openai_key_to_anthropic.status_code == 401 and openai_key_to_anthropic.json()["error"]["type"] == "authentication_error"
    no_key = httpx.post(f"{url}/v1/messages", headers={"anthropic-version": "2023-06-01"}, json={"model": "m", "max_tokens": 1, "messages": []})
    assert no_key.status_code == 401 and no_key.json()["error"]["message"] == "x-api-key header is required"
    no_version = httpx.post(f"{url}/v1/messages", headers={"x-api-key": ANTHROPIC_KEY}, json={"model": "m", "max_tokens": 1, "messages": []})
    assert no_version.status_code == 400 and "anthropic-version" in no_version.json()["error"]["message"]
    unknown_version = httpx.post(f"{url}/v1/messages", headers={"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2099-01-01"},
                                 json={"model": "m", "max_tokens": 1, "messages": []})
    assert unknown_version.status_code == 400 and unknown_version.json()["error"]["type"] == "invalid_request_error"
    assert "anthropic-version" in unknown_version.json()["error"]["message"]
    wrong_method = httpx.get(f"{url}/v1/chat/completions", headers={"Authorization": f"Bearer {OPENAI_KEY}"})
    assert wrong_method.status_code == 404 and wrong_method.json()["error"]["message"] == "Invalid URL (GET /v1/chat/completions)"


def test_async_clients_are_guarded_and_reported_streams_included(standin, make_guard, webhook):
    import asyncio

    server, url = standin
    guard = make_guard()
    client_openai = wrap_openai(openai.AsyncOpenAI(api_key=OPENAI_KEY, base_url=f"{url}/v1", max_retries=0), guard)
    client_anthropic = wrap_anthropic(anthropic.AsyncAnthropic(api_key=ANTHROPIC_KEY, base_url=url, max_retries=0), guard)

    async def calls():
        await client_openai.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        stream = await client_openai.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True)
        async for _ in stream:
            pass
        await client_anthropic.messages.create(model="claude-sonnet-4", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
        stream = await client_anthropic.messages.create(model="claude-sonnet-4", max_tokens=8, messages=[{"role": "user", "content": "hi"}], stream=True)
        async for _ in stream:
            pass

    asyncio.run(calls())
    assert guard.flush(timeout=10)
    for call in server.usage.calls[-4:]:
        counted = webhook.counted[call["request_id"]]
        assert (counted["model"], counted["tokens_in"], counted["tokens_cached"], counted["tokens_out"]) == (
            call["model"], call["usage"]["input"], call["usage"]["cached"], call["usage"]["output"])


def test_async_allow_refuses_an_engaged_switch(standin, make_guard, webhook):
    import asyncio

    _, url = standin
    webhook.status = {"state": "engaged", "limit_factor": "0"}
    guard = make_guard()
    client = wrap_openai(openai.AsyncOpenAI(api_key=OPENAI_KEY, base_url=f"{url}/v1", max_retries=0), guard)
    with pytest.raises(SpendBlocked):
        asyncio.run(client.chat.completions.create(model="gpt-4o", messages=[]))
