import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createServer } from "node:http";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { Webhook } from "standardwebhooks";
import { ReportRejected } from "../src/index.js";
import { FakeClock, FakeWebhook, SECRET, makeGuard } from "./helpers.js";

const record = (n: number, extra: Record<string, unknown> = {}) => ({ id: `r-${n}`, model: "gpt-4o", tokens_in: n, tokens_out: 2 * n, ...extra });

test("records go in signed batches of at most 1000, with the guard's scope", async () => {
  const webhook = new FakeWebhook();
  const guard = makeGuard(webhook, new FakeClock());
  for (let n = 0; n < 2500; n++) guard.report(record(n));
  assert.equal(await guard.flush(10_000), true);
  assert.deepEqual(webhook.deliveries.map((d) => d.ids.length), [1000, 1000, 500]);
  assert.equal(webhook.counted.size, 2500);
  assert.equal(webhook.counted.get("r-7")!.scope, "openai/prod");
  assert.equal(guard.stats.recordsSent, 2500);
  await guard.close();
});

test("batches stay under 256 KiB", async () => {
  const webhook = new FakeWebhook();
  const guard = makeGuard(webhook, new FakeClock());
  for (let n = 0; n < 300; n++) guard.report(record(n, { endpoint: "/" + "x".repeat(2000) }));
  assert.equal(await guard.flush(10_000), true);
  assert.ok(webhook.deliveries.length >= 3);
  assert.ok(webhook.deliveries.every((d) => Buffer.byteLength(d.body) <= 256 * 1024));
  assert.equal(webhook.counted.size, 300);
  await guard.close();
});

test("the interval timer sends without an explicit flush", async () => {
  const webhook = new FakeWebhook();
  let delivered!: () => void;
  const done = new Promise<void>((resolve) => (delivered = resolve));
  const fetch = (async (input: string | URL | Request, init?: RequestInit) => {
    const answer = await webhook.fetch(input, init);
    delivered();
    return answer;
  }) as typeof globalThis.fetch;
  const guard = makeGuard(webhook, new FakeClock(), { fetch, flushIntervalMs: 5 });
  guard.report(record(1));
  // the interval timer is unref'd: this pending promise's own timer keeps the test alive
  const keepAlive = setInterval(() => {}, 1000);
  await done;
  clearInterval(keepAlive);
  assert.equal(webhook.counted.size, 1);
  await guard.close();
});

test("a lost answer is retried as the same message and counts once", async () => {
  const webhook = new FakeWebhook();
  webhook.script = [
    (d) => {
      webhook.count(d.records);
      throw new TypeError("fetch failed: socket closed after the webhook counted");
    },
  ];
  const clock = new FakeClock();
  const guard = makeGuard(webhook, clock);
  for (let n = 0; n < 5; n++) guard.report(record(n));
  assert.equal(await guard.flush(10_000), true);
  const [first, replay] = webhook.deliveries;
  assert.equal(replay.webhookId, first.webhookId);
  assert.equal(replay.body, first.body);
  assert.equal(webhook.counted.size, 5);
  assert.equal(guard.stats.retries, 1);
  assert.ok(clock.slept.length === 1 && clock.slept[0] >= 0 && clock.slept[0] <= 500);
  await guard.close();
});

test("Retry-After is honoured and backoff grows", async () => {
  const webhook = new FakeWebhook();
  webhook.script = [
    () => Response.json({ error: "slow down" }, { status: 429, headers: { "retry-after": "7" } }),
    () => Response.json({ error: "store unavailable" }, { status: 503 }),
    () => Response.json({ error: "store unavailable" }, { status: 503 }),
    () => new Response(null, { status: 408 }),
    () => Response.json({ error: "concurrent delivery" }, { status: 409 }),
  ];
  const clock = new FakeClock();
  const guard = makeGuard(webhook, clock);
  guard.report(record(1));
  assert.equal(await guard.flush(10_000), true);
  assert.equal(clock.slept[0], 7000);
  assert.ok(clock.slept[1] <= 1000 && clock.slept[2] <= 2000 && clock.slept[3] <= 4000);
  assert.equal(new Set(webhook.deliveries.map((d) => d.webhookId)).size, 1);
  assert.deepEqual([...webhook.counted.keys()], ["r-1"]);
  await guard.close();
});

test("gives up after maxRetries and says so", async () => {
  const webhook = new FakeWebhook();
  webhook.script = [() => new Response(null, { status: 503 }), () => new Response(null, { status: 503 }), () => new Response(null, { status: 503 })];
  const errors: Error[] = [];
  const guard = makeGuard(webhook, new FakeClock(), { maxRetries: 2, onError: (e) => errors.push(e) });
  guard.report(record(1));
  await guard.flush(10_000);
  assert.equal(webhook.deliveries.length, 3);
  assert.equal(webhook.counted.size, 0);
  assert.equal(guard.stats.recordsDroppedAfterRetries, 1);
  assert.match(errors[0].message, /not delivered: answered 503; given up after 2 retries/);
  await guard.close();
});

test("a 4xx is not retried and is surfaced; one refused record does not sink the others", async () => {
  const webhook = new FakeWebhook();
  webhook.script = [
    () => Response.json({ error: "unauthorized" }, { status: 401 }),
    () => Response.json({ error: "unknown model", field: "records[1].model" }, { status: 400 }),
  ];
  const errors: Error[] = [];
  const guard = makeGuard(webhook, new FakeClock(), { onError: (e) => errors.push(e), maxBatchRecords: 2 });
  guard.report(record(0));
  guard.report(record(1)); // the first batch: refused with 401
  await guard.flush(10_000);
  for (let n = 2; n < 5; n++) guard.report(record(n, n === 3 ? { model: "gpt-5" } : {}));
  await guard.flush(10_000);
  assert.ok(errors[0] instanceof ReportRejected);
  assert.equal(errors[0].status, 401);
  assert.deepEqual(errors[0].recordIds, ["r-0", "r-1"]);
  assert.ok(errors[1] instanceof ReportRejected);
  assert.deepEqual(errors[1].recordIds, ["r-3"]);
  assert.equal(errors[1].field, "records[1].model");
  assert.deepEqual([...webhook.counted.keys()].sort(), ["r-2", "r-4"]);
  assert.equal(guard.stats.recordsRejected, 3);
  await guard.close();
});

test("the queue is bounded, dropping the oldest with a counter, never blocking", async () => {
  const webhook = new FakeWebhook();
  const guard = makeGuard(webhook, new FakeClock(), { maxQueue: 3 });
  for (let n = 0; n < 5; n++) guard.report(record(n));
  assert.equal(guard.stats.recordsDroppedQueueFull, 2);
  await guard.flush(10_000);
  assert.deepEqual([...webhook.counted.keys()].sort(), ["r-2", "r-3", "r-4"]);
  await guard.close();
});

test("ids are kept or made, and bad records refused naming the field", async () => {
  const webhook = new FakeWebhook();
  const guard = makeGuard(webhook, new FakeClock());
  assert.equal(guard.report({ id: "req_abc", tokens_in: 1 }), "req_abc");
  assert.match(guard.report({ tokens_in: 1 }), /^[0-9a-f]{32}$/);
  assert.throws(() => guard.report({ id: "has space" }), /^TypeError: id/);
  assert.throws(() => guard.report([] as never), /^TypeError: record/);
  await guard.flush(10_000);
  assert.equal(webhook.counted.size, 2);
  await guard.close();
});

test("records queued when the process ends are sent before it exits", async () => {
  const ids: string[] = [];
  const server = createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      new Webhook(SECRET).verify(body, req.headers as Record<string, string>);
      ids.push(...(JSON.parse(body) as { records: { id: string }[] }).records.map((r) => r.id));
      res.end("{}");
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  const index = fileURLToPath(new URL("../src/index.js", import.meta.url));
  const script = `
    const { Guard } = await import(${JSON.stringify(index)});
    const guard = new Guard("http://127.0.0.1:${port}", ${JSON.stringify(SECRET)}, "t", "openai/prod", { flushIntervalMs: 3600000 });
    for (let n = 0; n < 3; n++) guard.report({ id: "exit-" + n, tokens_in: n });
    // no flush, no close: the process would exit now; beforeExit sends them
  `;
  await promisify(execFile)(process.execPath, ["--input-type=module", "-e", script], { timeout: 60_000 });
  server.close();
  assert.deepEqual(ids.sort(), ["exit-0", "exit-1", "exit-2"]);
});

test("a record that is not JSON is refused alone and surfaced; the others are sent", async () => {
  const webhook = new FakeWebhook();
  const errors: Error[] = [];
  const guard = makeGuard(webhook, new FakeClock(), { onError: (e) => errors.push(e) });
  guard.report(record(1));
  const bad = guard.report({ id: "not-json", tokens_in: 10n as never });
  guard.report(record(2));
  await guard.flush(10_000);
  assert.deepEqual([...webhook.counted.keys()].sort(), ["r-1", "r-2"]);
  assert.ok(errors[0] instanceof ReportRejected);
  assert.deepEqual(errors[0].recordIds, [bad]);
  assert.match(errors[0].message, /not JSON/);
  await guard.close();
});

test("while a send hangs, the queue holds at most maxQueue records besides the batch in flight", async () => {
  const webhook = new FakeWebhook();
  const hanging = (() => new Promise<Response>(() => {})) as typeof fetch;
  const guard = makeGuard(webhook, new FakeClock(), { fetch: hanging, maxQueue: 10 });
  guard.report(record(0));
  void guard.flush(); // the first batch is now in flight, and never answered
  for (let n = 1; n <= 100_000; n++) guard.report(record(n));
  const reporter = (guard as unknown as { reporter: { queue: { length: number } } }).reporter;
  assert.ok(reporter.queue.length <= 10 + 1000, `${reporter.queue.length} records retained`);
  assert.equal(guard.stats.recordsDroppedQueueFull, 100_000 - 10);
  await guard.close(0);
});

test("records refused for the same field value cost one request, not one each", async () => {
  const webhook = new FakeWebhook();
  const refuseGpt5 = (d: { records: Record<string, unknown>[] }) => {
    const i = d.records.findIndex((r) => r.model === "gpt-5");
    return i < 0 ? null : Response.json({ error: "no price for openai/gpt-5", field: `records[${i}].model` }, { status: 400 });
  };
  webhook.script = Array.from({ length: 10 }, () => refuseGpt5);
  const errors: Error[] = [];
  const guard = makeGuard(webhook, new FakeClock(), { onError: (e) => errors.push(e) });
  for (let n = 0; n < 1000; n++) guard.report(record(n, { model: "gpt-5" }));
  guard.report(record(1000));
  assert.equal(await guard.flush(10_000), true);
  assert.ok(webhook.deliveries.length <= 3, `${webhook.deliveries.length} deliveries`);
  assert.equal(errors.length, 1);
  assert.ok(errors[0] instanceof ReportRejected);
  assert.equal(errors[0].recordIds.length, 1000);
  assert.equal(errors[0].field, "records[0].model");
  assert.deepEqual([...webhook.counted.keys()], ["r-1000"]);
  assert.equal(guard.stats.recordsRejected, 1000);
  await guard.close();
});

test("a NaN or an Infinity is refused at report() naming the field (JSON would turn it into null)", async () => {
  const webhook = new FakeWebhook();
  const guard = makeGuard(webhook, new FakeClock());
  for (let n = 0; n < 999; n++) guard.report(record(n));
  assert.throws(() => guard.report(record(999, { tokens_in: NaN })), /^TypeError: tokens_in: must be a finite number/);
  assert.throws(() => guard.report(record(1000, { cost: { amount: Infinity, currency: "USD" } })), /^TypeError: cost\.amount: must be a finite number/);
  assert.equal(await guard.flush(10_000), true);
  assert.equal(webhook.counted.size, 999);
  await guard.close();
});

test("Retry-After as an HTTP date, in each of its forms", async () => {
  const { parseRetryAfter } = await import("../src/reporter.js");
  const later = new Date(Date.now() + 60_000);
  for (const form of [later.toUTCString(), later.toUTCString().replace("GMT", "-0000"), "Sun Nov  6 08:49:37 1994"]) {
    const ms = parseRetryAfter(form);
    assert.ok(ms !== null && ms >= 0 && ms <= 60_000, `${form} -> ${ms}`);
  }
  const webhook = new FakeWebhook();
  webhook.script = [() => Response.json({ error: "store unavailable" }, { status: 503, headers: { "retry-after": "Sun Nov  6 08:49:37 1994" } })];
  const clock = new FakeClock();
  const guard = makeGuard(webhook, clock);
  guard.report(record(1));
  assert.equal(await guard.flush(10_000), true);
  assert.deepEqual(clock.slept, [0]); // a date in the past: retry now
  assert.equal(guard.stats.recordsSent, 1);
  await guard.close();
});

test("a process exits within exitTimeoutMs when the webhook asks it to retry much later", async () => {
  let deliveries = 0;
  const server = createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      deliveries++;
      res.writeHead(503, { "retry-after": "30", "content-type": "application/json" }).end('{"error":"store unavailable"}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  const index = fileURLToPath(new URL("../src/index.js", import.meta.url));
  const script = `
    const { Guard } = await import(${JSON.stringify(index)});
    const guard = new Guard("http://127.0.0.1:${port}", ${JSON.stringify(SECRET)}, "t", "openai/prod", { flushIntervalMs: 3600000, exitTimeoutMs: 500 });
    guard.report({ id: "exit-0", tokens_in: 1 });
  `;
  // the kill timer is far above the 500 ms asked for: the test checks that it exits, not how fast
  const child = await promisify(execFile)(process.execPath, ["--input-type=module", "-e", script], { timeout: 10_000 }).catch((e: { killed?: boolean; stderr?: string }) => e);
  server.close();
  assert.notEqual((child as { killed?: boolean }).killed, true, "still running after 10 s: killed");
  assert.equal(deliveries, 1);
  assert.match(String((child as { stderr?: string }).stderr), /1 usage records not sent at exit/);
});

test("records in flight at close are counted as not sent", async () => {
  const webhook = new FakeWebhook();
  webhook.script = Array.from({ length: 100 }, () => () => Response.json({ error: "store unavailable" }, { status: 503 }));
  const errors: string[] = [];
  const never = () => new Promise<void>(() => {}); // the retry waits past close's timeout
  const guard = makeGuard(webhook, new FakeClock(), { sleep: never, logger: { warn: () => {}, error: (m) => errors.push(m) } });
  for (let n = 0; n < 3; n++) guard.report(record(n));
  assert.equal(await guard.close(50), false);
  assert.deepEqual(errors, ["spendguard: 3 usage records not sent at close"]);
});

test("many Guards share one beforeExit listener", async () => {
  const before = process.listenerCount("beforeExit");
  const guards = Array.from({ length: 20 }, () => makeGuard(new FakeWebhook(), new FakeClock()));
  assert.ok(process.listenerCount("beforeExit") <= before + 1, `${process.listenerCount("beforeExit") - before} listeners added`);
  for (const guard of guards) await guard.close();
});
