/**
 * Wrappers for the official SDKs: `allow()` before each call, `report()` of its usage after.
 *
 *   const openai = wrapOpenAI(new OpenAI(), guard);
 *   await openai.chat.completions.create({ model: "gpt-4o", messages });          // guarded, reported
 *   const anthropic = wrapAnthropic(new Anthropic(), guard);
 *   for await (const event of await anthropic.messages.create({ ..., stream: true })) { … }
 *
 * Everything else on the client passes through unchanged. The record id is the provider's request
 * id (`x-request-id` / `request-id`), so a report replayed for the same call counts once. The
 * guarded `create` returns a plain Promise (not the SDK's APIPromise with `withResponse()`).
 */
import type { Guard } from "./guard.js";
import type { UsageRecord } from "./reporter.js";

type Create = (...args: unknown[]) => { withResponse(): Promise<{ data: unknown; request_id: string | null }> };
type Hook = (create: Create, guard: Guard) => (...args: unknown[]) => unknown;
type Tokens = Pick<UsageRecord, "tokens_in" | "tokens_out" | "tokens_cached" | "tokens_cache_write">;
// the SDKs' response shapes, as far as the wrappers read them
type Usage = Record<string, unknown> & { prompt_tokens_details?: { cached_tokens?: number | null } | null };
type Response = { id?: string; model?: string; usage?: Usage | null };

/**
 * Guards `chat.completions.create` (streaming included) and `parse` of an `openai` client, and the
 * clients `withOptions()` makes; `chat.completions.stream()` and `runTools()` throw rather than run
 * unguarded.
 */
export function wrapOpenAI<T extends object>(client: T, guard: Guard): T {
  return proxy(client, guard, OPENAI_HOOKS, "");
}

/**
 * Guards `messages.create` (streaming included) and `parse` of an `@anthropic-ai/sdk` client, and
 * the clients `withOptions()` makes; `messages.stream()` throws rather than run unguarded.
 */
export function wrapAnthropic<T extends object>(client: T, guard: Guard): T {
  return proxy(client, guard, ANTHROPIC_HOOKS, "");
}

/** `withOptions()` makes a new client: it is wrapped like the one it came from. */
const rewrapped =
  (hooks: Record<string, Hook>): Hook =>
  (makeClient, guard) =>
  (...args) =>
    proxy(makeClient(...args) as object, guard, hooks, "");

/** A helper the wrapper cannot guard: refused loudly, never passed through around the switch. */
const unsupported =
  (name: string, instead: string): Hook =>
  () =>
  () => {
    throw new Error(`spendguard: ${name}() is not guarded by the wrapper; use ${instead} instead`);
  };

function proxy<T extends object>(target: T, guard: Guard, hooks: Record<string, Hook>, prefix: string): T {
  // the guarded methods and the proxies on the way to them, made once (a guarded call's overhead)
  const made = new Map<string, unknown>();
  return new Proxy(target, {
    get(object, name, receiver) {
      if (typeof name === "string" && made.has(name)) return made.get(name);
      const value = Reflect.get(object, name, object);
      if (typeof name !== "string") return value;
      const path = prefix + name;
      const hook = hooks[path];
      if (hook) {
        made.set(name, hook((value as Create).bind(object), guard));
        return made.get(name);
      }
      if (Object.keys(hooks).some((p) => p.startsWith(`${path}.`))) {
        made.set(name, proxy(value as object, guard, hooks, `${path}.`));
        return made.get(name);
      }
      // the SDKs' methods use private fields: they must run on the client itself, not on the proxy
      return typeof value === "function" && receiver !== object ? value.bind(object) : value;
    },
  });
}

// -- OpenAI ---------------------------------------------------------------------------------------

const openaiChatCreate: Hook = (create, guard) => async (...args) => {
  await guard.allow();
  const [params, ...rest] = args as [Record<string, unknown>, ...unknown[]];
  if (params?.stream) {
    // the usage of a stream comes only in a last chunk, and only when asked for
    const asked = (params.stream_options as { include_usage?: boolean } | undefined)?.include_usage === true;
    const options = { ...((params.stream_options as object) ?? {}), include_usage: true };
    const { data, request_id } = await create({ ...params, stream_options: options }, ...rest).withResponse();
    return reportingStream(data as AsyncIterable<unknown>, guard, "openai", request_id, new OpenAIStreamUsage(!asked));
  }
  const { data, request_id } = await create(...args).withResponse();
  const completion = data as Response;
  report(guard, "openai", completion.model, request_id ?? completion.id, openaiTokens(completion.usage));
  return data;
};

function openaiTokens(usage: Usage | null | undefined): Tokens {
  if (!usage) return {};
  const cached = usage.prompt_tokens_details?.cached_tokens ?? 0;
  // spendguard's tokens_in excludes cached tokens; OpenAI's prompt_tokens includes them
  return {
    tokens_in: Math.max(0, Number(usage.prompt_tokens ?? 0) - cached),
    tokens_cached: cached,
    tokens_out: Number(usage.completion_tokens ?? 0),
  };
}

class OpenAIStreamUsage {
  model: string | undefined;
  messageId: string | undefined;
  tokens: Tokens | null = null;

  /** hideUsageChunk: the caller did not ask for the usage chunk (it has no choices): read, not yielded. */
  constructor(private readonly hideUsageChunk: boolean) {}

  hidden(chunk: unknown): boolean {
    const c = chunk as { usage?: unknown; choices?: unknown[] };
    return this.hideUsageChunk && c.usage != null && (c.choices?.length ?? 0) === 0;
  }

  see(chunk: unknown): void {
    const c = chunk as Response;
    this.model = c.model ?? this.model;
    this.messageId = c.id ?? this.messageId;
    if (c.usage) this.tokens = openaiTokens(c.usage);
  }
}

// -- Anthropic ------------------------------------------------------------------------------------

const anthropicMessagesCreate: Hook = (create, guard) => async (...args) => {
  await guard.allow();
  const params = args[0] as Record<string, unknown> | undefined;
  const { data, request_id } = await create(...args).withResponse();
  if (params?.stream) {
    return reportingStream(data as AsyncIterable<unknown>, guard, "anthropic", request_id, new AnthropicStreamUsage());
  }
  const message = data as Response;
  report(guard, "anthropic", message.model, request_id ?? message.id, anthropicTokens(message.usage));
  return data;
};

const OPENAI_HOOKS: Record<string, Hook> = {
  "chat.completions.create": openaiChatCreate,
  "chat.completions.parse": openaiChatCreate,
  "chat.completions.stream": unsupported("chat.completions.stream", "chat.completions.create({ stream: true })"),
  "chat.completions.runTools": unsupported("chat.completions.runTools", "chat.completions.create"),
};
OPENAI_HOOKS.withOptions = rewrapped(OPENAI_HOOKS);

const ANTHROPIC_HOOKS: Record<string, Hook> = {
  "messages.create": anthropicMessagesCreate,
  "messages.parse": anthropicMessagesCreate,
  "messages.stream": unsupported("messages.stream", "messages.create({ stream: true })"),
};
ANTHROPIC_HOOKS.withOptions = rewrapped(ANTHROPIC_HOOKS);

function anthropicTokens(usage: Usage | null | undefined): Tokens {
  // Anthropic's input_tokens already excludes cache reads and cache writes
  return {
    tokens_in: Number(usage?.input_tokens ?? 0),
    tokens_cached: Number(usage?.cache_read_input_tokens ?? 0),
    tokens_cache_write: Number(usage?.cache_creation_input_tokens ?? 0),
    tokens_out: Number(usage?.output_tokens ?? 0),
  };
}

class AnthropicStreamUsage {
  model: string | undefined;
  messageId: string | undefined;
  tokens: Tokens | null = null;

  hidden(): boolean {
    return false;
  }

  see(event: unknown): void {
    const e = event as { type?: string; message?: Response; usage?: Usage | null };
    if (e.type === "message_start" && e.message) {
      this.model = e.message.model;
      this.messageId = e.message.id;
      this.tokens = anthropicTokens(e.message.usage);
    } else if (e.type === "message_delta" && e.usage && this.tokens) {
      // the delta's counts are cumulative; input counts appear in it only when they changed
      const fields: [string, keyof Tokens][] = [
        ["output_tokens", "tokens_out"],
        ["input_tokens", "tokens_in"],
        ["cache_read_input_tokens", "tokens_cached"],
        ["cache_creation_input_tokens", "tokens_cache_write"],
      ];
      for (const [field, name] of fields) {
        const value = e.usage[field];
        if (typeof value === "number") this.tokens[name] = value;
      }
    }
  }
}

// -- shared ---------------------------------------------------------------------------------------

/** One stream's report: made once, when the stream ends, is closed, or is dropped unread. */
class StreamReport {
  started = false;
  private reported = false;

  constructor(
    private readonly guard: Guard,
    private readonly provider: string,
    private readonly requestId: string | null,
    readonly usage: OpenAIStreamUsage | AnthropicStreamUsage,
  ) {}

  finish(): void {
    if (this.reported) return;
    this.reported = true;
    const { guard, provider, usage } = this;
    if (usage.tokens === null) {
      // a stream abandoned before its usage arrived still cost a request: report it, and say so
      guard.logger.warn(`spendguard: a ${provider} stream ended before its usage (closed early, or dropped unread); reported as one request without tokens`);
    }
    report(guard, provider, usage.model, this.requestId ?? usage.messageId, usage.tokens ?? {});
  }
}

// a stream dropped without ever being read is reported when it is collected (the SDK cannot tell)
const unread = new FinalizationRegistry<StreamReport>((streamReport) => {
  if (!streamReport.started) streamReport.finish();
});

/** Every item the SDK's stream yields, seen by the report, which is made when the items end. */
async function* capture(items: AsyncIterator<unknown>, streamReport: StreamReport): AsyncGenerator<unknown> {
  streamReport.started = true;
  try {
    for (let next = await items.next(); !next.done; next = await items.next()) {
      streamReport.usage.see(next.value);
      if (!streamReport.usage.hidden(next.value)) yield next.value;
    }
  } finally {
    await items.return?.();
    streamReport.finish();
  }
}

/**
 * The SDK's stream itself, its iterator replaced by one that captures the usage: `for await`,
 * `tee()` and `toReadableStream()` all read through it (both SDKs' streams read `this.iterator()`).
 */
function reportingStream<S extends AsyncIterable<unknown>>(
  stream: S,
  guard: Guard,
  provider: string,
  requestId: string | null,
  usage: OpenAIStreamUsage | AnthropicStreamUsage,
): S {
  const streamReport = new StreamReport(guard, provider, requestId, usage);
  const sdkStream = stream as S & { iterator?: () => AsyncIterator<unknown> };
  const iterator = sdkStream.iterator;
  if (typeof iterator !== "function") {
    // the call was made (and billed): never throw now; count it as a request, loudly
    guard.logger.error(`spendguard: this ${provider} SDK's stream has no iterator() to read its usage from`);
    streamReport.finish();
    return stream;
  }
  sdkStream.iterator = () => capture(iterator.call(stream), streamReport);
  unread.register(stream, streamReport);
  return stream;
}

function report(guard: Guard, provider: string, model: string | undefined, id: string | null | undefined, tokens: Tokens): void {
  const record: UsageRecord = { provider, requests: 1, ...tokens };
  if (model) record.model = model;
  if (id) record.id = id;
  try {
    try {
      guard.report(record);
    } catch (e) {
      if (!(e instanceof TypeError) || !e.message.startsWith("id:")) throw e;
      // an id the webhook would refuse: report under a fresh one instead
      guard.logger.warn(`spendguard: ${e.message}; reporting under a new id`);
      delete record.id;
      guard.report(record);
    }
  } catch (e) {
    // the provider has answered (and billed): the caller gets its answer, the loss is loud
    guard.stats.reportsLost++;
    guard.logger.error(`spendguard: the usage of a ${provider} call (id ${id}) was not reported: ${e instanceof Error ? e.message : String(e)}`);
  }
}
