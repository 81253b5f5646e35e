import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import Anthropic from "@anthropic-ai/sdk";
import OpenAI from "openai";
import { SpendBlocked, wrapAnthropic, wrapOpenAI } from "../src/index.js";
import { ANTHROPIC_KEY, FakeClock, FakeWebhook, OPENAI_KEY, makeGuard, startStandin } from "./helpers.js";

let standin: Awaited<ReturnType<typeof startStandin>>;
before(async () => {
  standin = await startStandin();
});
after(() => {
  standin.process.stdin!.end();
});

const openai = (apiKey = OPENAI_KEY) => new OpenAI({ apiKey, baseURL: `${standin.url}/v1`, maxRetries: 0 });
const anthropic = (apiKey = ANTHROPIC_KEY) => new Anthropic({ apiKey, baseURL: standin.url, maxRetries: 0 });
const lastCall = async () => (await standin.calls()).at(-1)!;

test("an OpenAI call is reported with its usage and request id", async () => {
  const webhook = new FakeWebhook();
  const guard = makeGuard(webhook, new FakeClock());
  const client = wrapOpenAI(openai(), guard);
  const answer = await client.chat.completions.create({ model: "gpt-4o", messages: [{ role: "user", content: "hi" }] });
  assert.equal(answer.choices[0].message.content, "Spend is guarded.");
  await guard.flush(10_000);
  const call = await lastCall();
  const counted = webhook.counted.get(call.request_id)!;
  assert.deepEqual(
    { ...counted, timestamp: undefined },
    {
      id: call.request_id, scope: "openai/prod", provider: "openai", model: "gpt-4o", requests: 1,
      tokens_in: call.usage.input, tokens_cached: call.usage.cached, tokens_out: call.usage.output, timestamp: undefined,
    },
  );
  await guard.close();
});

test("an OpenAI stream is reported from its last chunk", async () => {
  const webhook = new FakeWebhook();
  const guard = makeGuard(webhook, new FakeClock());
  const stream = await wrapOpenAI(openai(), guard).chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }], stream: true });
  let text = "";
  for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? "";
  assert.equal(text, "Spend is guarded.");
  await guard.flush(10_000);
  const call = await lastCall();
  assert.ok(call.stream);
  const counted = webhook.counted.get(call.request_id)!;
  assert.deepEqual([counted.model, counted.tokens_in, counted.tokens_cached, counted.tokens_out], ["gpt-4o-mini", call.usage.input, call.usage.cached, call.usage.output]);
  await guard.close();
});

test("an OpenAI stream reads like the SDK's own when usage was not asked for", async () => {
  const webhook = new FakeWebhook();
  const guard = makeGuard(webhook, new FakeClock());
  const client = wrapOpenAI(openai(), guard);
  const stream = await client.chat.completions.create({ model: "gpt-4o", messages: [{ role: "user", content: "hi" }], stream: true });
  let text = "";
  // caller code written for the plain SDK: every chunk has a choice
  for await (const chunk of stream) text += chunk.choices[0].delta.content ?? "";
  assert.equal(text, "Spend is guarded.");
  await guard.flush(10_000);
  const call = await lastCall();
  assert.equal(webhook.counted.get(call.request_id)!.tokens_out, call.usage.output);
  // asked for: the usage chunk is the caller's
  const asked = await client.chat.completions.create({ model: "gpt-4o", messages: [{ role: "user", content: "hi" }], stream: true, stream_options: { include_usage: true } });
  const chunks = [];
  for await (const chunk of asked) chunks.push(chunk);
  assert.deepEqual(chunks.at(-1)!.choices, []);
  await guard.close();
});

test("an Anthropic call and stream are reported", async () => {
  const webhook = new FakeWebhook();
  const guard = makeGuard(webhook, new FakeClock());
  const client = wrapAnthropic(anthropic(), guard);
  const message = await client.messages.create({ model: "claude-sonnet-4", max_tokens: 64, messages: [{ role: "user", content: "hi" }] });
  assert.deepEqual(message.content[0], { type: "text", text: "Spend is guarded." });
  const plain = await lastCall();
  const events = [];
  for await (const event of await client.messages.create({ model: "claude-sonnet-4", max_tokens: 64, messages: [{ role: "user", content: "hi" }], stream: true })) events.push(event);
  assert.equal(events.at(-1)!.type, "message_stop");
  const streamed = await lastCall();
  await guard.flush(10_000);
  for (const call of [plain, streamed]) {
    const c = webhook.counted.get(call.request_id)!;
    assert.deepEqual(
      [c.provider, c.model, c.tokens_in, c.tokens_cached, c.tokens_cache_write, c.tokens_out],
      ["anthropic", "claude-sonnet-4", call.usage.input, call.usage.cached, call.usage.cache_write, call.usage.output],
    );
  }
  await guard.close();
});

test("a stream abandoned early is still reported as a request", async () => {
  const webhook = new FakeWebhook();
  const guard = makeGuard(webhook, new FakeClock());
  const stream = await wrapOpenAI(openai(), guard).chat.completions.create({ model: "gpt-4o", messages: [{ role: "user", content: "hi" }], stream: true });
  for await (const _ of stream) break;
  await guard.flush(10_000);
  const counted = webhook.counted.get((await lastCall()).request_id)!;
  assert.equal(counted.requests, 1);
  await guard.close();
});

test("a stream read through tee() or toReadableStream() is reported with its usage", async () => {
  const webhook = new FakeWebhook();
  const guard = makeGuard(webhook, new FakeClock());
  const client = wrapOpenAI(openai(), guard);
  const params = { model: "gpt-4o", messages: [{ role: "user" as const, content: "hi" }], stream: true as const };
  const [left, right] = (await client.chat.completions.create(params)).tee();
  for await (const _ of left);
  for await (const _ of right);
  const teed = await lastCall();
  const readable = (await client.chat.completions.create(params)).toReadableStream();
  for await (const _ of readable);
  const read = await lastCall();
  await guard.flush(10_000);
  for (const call of [teed, read]) assert.equal(webhook.counted.get(call.request_id)?.tokens_out, call.usage.output);
  await guard.close();
});

test("a stream dropped without being read is reported as a request, with a warning", async () => {
  setFlagsFromString("--expose-gc");
  const gc = runInNewContext("gc") as () => void;
  const webhook = new FakeWebhook();
  const warnings: string[] = [];
  const guard = makeGuard(webhook, new FakeClock(), { logger: { warn: (m) => warnings.push(m), error: () => {} } });
  const client = wrapOpenAI(openai(), guard);
  await (async () => {
    await client.chat.completions.create({ model: "gpt-4o", messages: [{ role: "user", content: "hi" }], stream: true });
  })(); // the stream is not kept
  const call = await lastCall();
  // finalizers run after a collection, as a later task: collect until it ran (a bounded number of times)
  for (let i = 0; i < 50 && guard.stats.recordsQueued === 0; i++) {
    gc();
    await new Promise((resolve) => setImmediate(resolve));
  }
  await guard.flush(10_000);
  assert.equal(webhook.counted.get(call.request_id)?.requests, 1);
  assert.match(warnings.join("\n"), /stream ended before its usage/);
  await guard.close();
});

test("an engaged switch stops the call before it reaches the provider", async () => {
  const webhook = new FakeWebhook();
  webhook.status = { state: "engaged", limit_factor: "0", switch_scope: "openai" };
  const guard = makeGuard(webhook, new FakeClock());
  const before = (await standin.calls()).length;
  await assert.rejects(wrapOpenAI(openai(), guard).chat.completions.create({ model: "gpt-4o", messages: [] }), SpendBlocked);
  await assert.rejects(wrapAnthropic(anthropic(), guard).messages.create({ model: "claude-sonnet-4", max_tokens: 1, messages: [] }), SpendBlocked);
  assert.equal((await standin.calls()).length, before);
  await guard.close();
});

test("copies, parse and the stream helpers do not get around the switch", async () => {
  const webhook = new FakeWebhook();
  webhook.status = { state: "engaged", limit_factor: "0", switch_scope: "openai" };
  const guard = makeGuard(webhook, new FakeClock());
  const before = (await standin.calls()).length;
  const messages = [{ role: "user" as const, content: "hi" }];
  const client = wrapOpenAI(openai(), guard);
  await assert.rejects(client.withOptions({ timeout: 5000 }).chat.completions.create({ model: "gpt-4o", messages }), SpendBlocked);
  await assert.rejects(client.chat.completions.parse({ model: "gpt-4o", messages }), SpendBlocked);
  assert.throws(() => client.chat.completions.stream({ model: "gpt-4o", messages }), /not guarded.*create/);
  const claude = wrapAnthropic(anthropic(), guard);
  await assert.rejects(claude.withOptions({ timeout: 5000 }).messages.create({ model: "claude-sonnet-4", max_tokens: 8, messages }), SpendBlocked);
  await assert.rejects(claude.messages.parse({ model: "claude-sonnet-4", max_tokens: 8, messages }), SpendBlocked);
  assert.throws(() => claude.messages.stream({ model: "claude-sonnet-4", max_tokens: 8, messages }), /not guarded.*create/);
  assert.equal((await standin.calls()).length, before);
  await guard.close();
});

test("parse is reported like create", async () => {
  const webhook = new FakeWebhook();
  const guard = makeGuard(webhook, new FakeClock());
  await wrapOpenAI(openai(), guard).withOptions({ timeout: 5000 }).chat.completions.parse({ model: "gpt-4o", messages: [{ role: "user", content: "hi" }] });
  await guard.flush(10_000);
  const call = await lastCall();
  assert.equal(webhook.counted.get(call.request_id)!.tokens_out, call.usage.output);
  await guard.close();
});

test("a wrapped call the provider answered never throws for its report", async () => {
  const errors: string[] = [];
  const guard = makeGuard(new FakeWebhook(), new FakeClock(), { logger: { warn: () => {}, error: (m) => errors.push(m) } });
  const client = wrapOpenAI(openai(), guard);
  await guard.allow(); // the switch read while the guard was open (cached)
  await guard.close();
  assert.throws(() => guard.report({ tokens_in: 1 }), /report\(\) after close\(\)/);
  const answer = await client.chat.completions.create({ model: "gpt-4o", messages: [{ role: "user", content: "hi" }] });
  assert.equal(answer.choices[0].message.content, "Spend is guarded.");
  assert.equal(guard.stats.reportsLost, 1);
  assert.equal(errors.length, 1);
  assert.match(errors[0], /report\(\) after close\(\)/);
  assert.ok(errors[0].includes((await lastCall()).request_id));
});

test("other client attributes pass through", async () => {
  const guard = makeGuard(new FakeWebhook(), new FakeClock());
  const client = wrapOpenAI(openai(), guard);
  assert.equal(client.apiKey, OPENAI_KEY);
  assert.ok(client.baseURL.startsWith(standin.url));
  await guard.close();
});

test("the stand-ins refuse a wrong key and a malformed body, as the SDKs see it", async () => {
  await assert.rejects(openai("sk-wrong").chat.completions.create({ model: "gpt-4o", messages: [] }), (e: unknown) => {
    assert.ok(e instanceof OpenAI.AuthenticationError);
    assert.equal(e.code, "invalid_api_key");
    return true;
  });
  await assert.rejects(openai().chat.completions.create({ model: "gpt-4o", messages: "no" as never }), OpenAI.BadRequestError);
  await assert.rejects(anthropic("sk-ant-wrong").messages.create({ model: "m", max_tokens: 1, messages: [] }), Anthropic.AuthenticationError);
  await assert.rejects(anthropic().messages.create({ model: "m", max_tokens: 1, messages: "no" as never }), Anthropic.BadRequestError);
});
