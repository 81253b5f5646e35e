"""Wrappers for the official SDKs: `allow()` before each call, `report()` of its usage after.

    client = wrap_openai(openai.OpenAI(), guard)
    client.chat.completions.create(model="gpt-4o", messages=[...])          # guarded, reported
    client = wrap_anthropic(anthropic.Anthropic(), guard)
    client.messages.create(model="claude-sonnet-4", max_tokens=512, messages=[...], stream=True)

Everything else on the client passes through unchanged. The record id is the provider's request id
(`x-request-id` / `request-id`), so a report replayed for the same call counts once.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any, AsyncIterator, Callable, Dict, Iterator, Optional

from ._guard import Guard

log = logging.getLogger("spendguard")

Hook = Callable[[Callable[..., Any], Guard], Callable[..., Any]]


def wrap_openai(client: Any, guard: Guard) -> Any:
    """Guards `chat.completions.create` (streams included) and `parse` of an `openai.OpenAI` or
    `AsyncOpenAI` client, and the clients `with_options()`/`copy()` make; `chat.completions.stream()`
    is refused (NotImplementedError) rather than let through unguarded."""
    return _Proxy(client, guard, _OPENAI_HOOKS, "")


def wrap_anthropic(client: Any, guard: Guard) -> Any:
    """Guards `messages.create` (streams included) and `parse` of an `anthropic.Anthropic` or
    `AsyncAnthropic` client, and the clients `with_options()`/`copy()` make; `messages.stream()` is
    refused (NotImplementedError) rather than let through unguarded."""
    return _Proxy(client, guard, _ANTHROPIC_HOOKS, "")


def _rewrapped(hooks: Dict[str, "Hook"]) -> "Hook":
    """`with_options()`/`copy()` make a new client: it is wrapped like the one it came from."""

    def hook(make_client: Callable[..., Any], guard: Guard) -> Callable[..., Any]:
        return lambda *args, **kwargs: _Proxy(make_client(*args, **kwargs), guard, hooks, "")

    return hook


def _unsupported(instead: str) -> "Hook":
    """A helper the wrapper cannot guard: refused loudly, never passed through around the switch."""

    def hook(method: Callable[..., Any], guard: Guard) -> Callable[..., Any]:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise NotImplementedError(
                f"spendguard: {method.__qualname__}() is not guarded by the wrapper; use {instead} instead"
            )

        return refuse

    return hook


class _Proxy:
    """Passes every attribute through, except the guarded methods on the way to them."""

    def __init__(self, target: Any, guard: Guard, hooks: Dict[str, Hook], prefix: str) -> None:
        self._target = target
        self._guard = guard
        self._hooks = hooks
        self._prefix = prefix

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        path = self._prefix + name
        hook = self._hooks.get(path)
        if hook is not None:
            guarded: Any = hook(value, self._guard)
        elif any(p.startswith(path + ".") for p in self._hooks):
            guarded = _Proxy(value, self._guard, self._hooks, path + ".")
        else:
            return value  # not kept: it may change on the client
        # kept on the proxy: the next call finds it without __getattr__ (a guarded call's overhead)
        self.__dict__[name] = guarded
        return guarded


# -- OpenAI --------------------------------------------------------------------------------------


def _openai_chat_create(create: Callable[..., Any], guard: Guard) -> Callable[..., Any]:
    def with_usage_chunk(kwargs: Dict[str, Any]) -> Dict[str, Any]:
        if kwargs.get("stream"):
            # the usage of a stream comes only in a last chunk, and only when asked for
            return {**kwargs, "stream_options": {**(kwargs.get("stream_options") or {}), "include_usage": True}}
        return kwargs

    def reported(completion: Any) -> Any:
        _report(guard, "openai", completion.model, _request_id(completion, completion.id), _openai_tokens(completion.usage))
        return completion

    def stream_usage(kwargs: Dict[str, Any]) -> "_OpenAIStreamUsage":
        asked = bool((kwargs.get("stream_options") or {}).get("include_usage"))
        return _OpenAIStreamUsage(hide_usage_chunk=not asked)

    if _is_async(create):  # AsyncOpenAI

        async def guarded_async(*args: Any, **kwargs: Any) -> Any:
            await guard.allow_async()
            usage = stream_usage(kwargs) if kwargs.get("stream") else None
            answer = await create(*args, **with_usage_chunk(kwargs))
            if usage is not None:
                return _AsyncReportingStream(answer, guard, usage)
            return reported(answer)

        return guarded_async

    def guarded(*args: Any, **kwargs: Any) -> Any:
        guard.allow()
        usage = stream_usage(kwargs) if kwargs.get("stream") else None
        answer = create(*args, **with_usage_chunk(kwargs))
        if usage is not None:
            return _ReportingStream(answer, guard, usage)
        return reported(answer)

    return guarded


def _openai_tokens(usage: Any) -> Dict[str, int]:
    if usage is None:
        return {}
    details = getattr(usage, "prompt_tokens_details", None)
    cached = (getattr(details, "cached_tokens", None) or 0) if details is not None else 0
    # spendguard's tokens_in excludes cached tokens; OpenAI's prompt_tokens includes them
    return {
        "tokens_in": max(0, (usage.prompt_tokens or 0) - cached),
        "tokens_cached": cached,
        "tokens_out": usage.completion_tokens or 0,
    }


class _OpenAIStreamUsage:
    provider = "openai"

    def __init__(self, hide_usage_chunk: bool) -> None:
        # the caller did not ask for the usage chunk (it has no choices): read it, do not yield it
        self.hide_usage_chunk = hide_usage_chunk
        self.model: Optional[str] = None
        self.message_id: Optional[str] = None
        self.tokens: Optional[Dict[str, int]] = None

    def see(self, chunk: Any) -> None:
        self.model = getattr(chunk, "model", None) or self.model
        self.message_id = getattr(chunk, "id", None) or self.message_id
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            self.tokens = _openai_tokens(usage)

    def hidden(self, chunk: Any) -> bool:
        return self.hide_usage_chunk and getattr(chunk, "usage", None) is not None and not getattr(chunk, "choices", None)


# -- Anthropic -----------------------------------------------------------------------------------


def _anthropic_messages_create(create: Callable[..., Any], guard: Guard) -> Callable[..., Any]:
    def reported(message: Any) -> Any:
        _report(guard, "anthropic", message.model, _request_id(message, message.id), _anthropic_tokens(message.usage))
        return message

    if _is_async(create):  # AsyncAnthropic

        async def guarded_async(*args: Any, **kwargs: Any) -> Any:
            await guard.allow_async()
            answer = await create(*args, **kwargs)
            if kwargs.get("stream"):
                return _AsyncReportingStream(answer, guard, _AnthropicStreamUsage())
            return reported(answer)

        return guarded_async

    def guarded(*args: Any, **kwargs: Any) -> Any:
        guard.allow()
        answer = create(*args, **kwargs)
        if kwargs.get("stream"):
            return _ReportingStream(answer, guard, _AnthropicStreamUsage())
        return reported(answer)

    return guarded


_OPENAI_HOOKS: Dict[str, Hook] = {
    "chat.completions.create": _openai_chat_create,
    "chat.completions.parse": _openai_chat_create,
    "chat.completions.stream": _unsupported("chat.completions.create(stream=True)"),
}
_OPENAI_HOOKS["with_options"] = _OPENAI_HOOKS["copy"] = _rewrapped(_OPENAI_HOOKS)

_ANTHROPIC_HOOKS: Dict[str, Hook] = {
    "messages.create": _anthropic_messages_create,
    "messages.parse": _anthropic_messages_create,
    "messages.stream": _unsupported("messages.create(stream=True)"),
}
_ANTHROPIC_HOOKS["with_options"] = _ANTHROPIC_HOOKS["copy"] = _rewrapped(_ANTHROPIC_HOOKS)


def _anthropic_tokens(usage: Any) -> Dict[str, int]:
    # Anthropic's input_tokens already excludes cache reads and cache writes
    return {
        "tokens_in": getattr(usage, "input_tokens", None) or 0,
        "tokens_cached": getattr(usage, "cache_read_input_tokens", None) or 0,
        "tokens_cache_write": getattr(usage, "cache_creation_input_tokens", None) or 0,
        "tokens_out": getattr(usage, "output_tokens", None) or 0,
    }


class _AnthropicStreamUsage:
    provider = "anthropic"

    def hidden(self, event: Any) -> bool:
        return False

    def __init__(self) -> None:
        self.model: Optional[str] = None
        self.message_id: Optional[str] = None
        self.tokens: Optional[Dict[str, int]] = None

    def see(self, event: Any) -> None:
        kind = getattr(event, "type", None)
        if kind == "message_start":
            self.model = event.message.model
            self.message_id = event.message.id
            self.tokens = _anthropic_tokens(event.message.usage)
        elif kind == "message_delta" and getattr(event, "usage", None) is not None and self.tokens is not None:
            # the delta's counts are cumulative; the input counts appear in it only when they changed
            for field, name in (
                ("output_tokens", "tokens_out"),
                ("input_tokens", "tokens_in"),
                ("cache_read_input_tokens", "tokens_cached"),
                ("cache_creation_input_tokens", "tokens_cache_write"),
            ):
                value = getattr(event.usage, field, None)
                if value is not None:
                    self.tokens[name] = value


# -- shared --------------------------------------------------------------------------------------


class _StreamReport:
    """What both streams share: the SDK's stream, and its usage reported once."""

    def __init__(self, stream: Any, guard: Guard, usage: Any) -> None:
        self._stream = stream
        self._guard = guard
        self._usage = usage
        self._reported = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def __del__(self) -> None:
        # dropped without being read to its end or closed: the request still cost, report it
        if "_reported" in self.__dict__:
            self._finish()

    def _finish(self) -> None:
        if not self._reported:
            self._reported = True
            _report_stream(self._guard, self._stream, self._usage)


class _ReportingStream(_StreamReport):
    """Yields the SDK's stream unchanged and reports its usage once, when it ends or is closed."""

    def __iter__(self) -> Iterator[Any]:
        try:
            for item in self._stream:
                self._usage.see(item)
                if not self._usage.hidden(item):
                    yield item
        finally:
            self._finish()

    def __enter__(self) -> "_ReportingStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            self._finish()


class _AsyncReportingStream(_StreamReport):
    """The async SDK's stream, unchanged, reporting its usage once when it ends or is closed."""

    async def __aiter__(self) -> AsyncIterator[Any]:
        try:
            async for item in self._stream:
                self._usage.see(item)
                if not self._usage.hidden(item):
                    yield item
        finally:
            self._finish()

    async def __aenter__(self) -> "_AsyncReportingStream":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        try:
            await self._stream.close()
        finally:
            self._finish()


def _report_stream(guard: Guard, stream: Any, usage: Any) -> None:
    if usage.tokens is None:
        # a stream closed before its usage arrived still cost a request: report it, and say so
        log.warning(
            "spendguard: a %s stream ended before its usage (closed early, or dropped unread); reported as one request without tokens",
            usage.provider,
        )
    response = getattr(stream, "response", None)
    headers = getattr(response, "headers", None) or {}
    header = "x-request-id" if usage.provider == "openai" else "request-id"
    record_id = headers.get(header) or usage.message_id
    _report(guard, usage.provider, usage.model, record_id, usage.tokens or {})


def _request_id(response: Any, fallback: Optional[str]) -> Optional[str]:
    return getattr(response, "_request_id", None) or fallback


def _report(guard: Guard, provider: str, model: Optional[str], record_id: Optional[str], tokens: Dict[str, int]) -> None:
    record: Dict[str, Any] = {"provider": provider, "requests": 1, **tokens}
    if model:
        record["model"] = model
    if record_id:
        record["id"] = record_id
    try:
        try:
            guard.report(record)
        except ValueError as e:
            if not str(e).startswith("id:"):
                raise
            # an id the webhook would refuse: report under a fresh one instead
            log.warning("spendguard: %s; reporting under a new id", e)
            record.pop("id", None)
            guard.report(record)
    except Exception as e:
        # the provider has answered (and billed): the caller gets its answer, the loss is loud
        guard.stats.reports_lost += 1
        log.error("spendguard: the usage of a %s call (id %s) was not reported: %s", provider, record_id, e)


def _is_async(create: Callable[..., Any]) -> bool:
    # the SDKs' async methods sit under a plain decorator (functools.wraps): look beneath it
    return inspect.iscoroutinefunction(inspect.unwrap(create))
