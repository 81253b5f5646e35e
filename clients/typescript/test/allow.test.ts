import assert from "node:assert/strict";
import { test } from "node:test";
import { Guard, GuardUnavailable, SpendBlocked, Throttled } from "../src/index.js";
import { FakeClock, FakeWebhook, SECRET, makeGuard } from "./helpers.js";

test("an open switch allows and is read once per cache period", async () => {
  const webhook = new FakeWebhook();
  const clock = new FakeClock();
  const guard = makeGuard(webhook, clock, { cacheMs: 5000 });
  for (let i = 0; i < 100; i++) await guard.allow();
  assert.equal(webhook.statusReads, 1);
  clock.now += 4900;
  await guard.allow();
  assert.equal(webhook.statusReads, 1);
  clock.now += 200;
  await guard.allow();
  assert.equal(webhook.statusReads, 2);
  await guard.close();
});

test("concurrent calls on a cold cache read the switch once", async () => {
  const webhook = new FakeWebhook();
  const guard = makeGuard(webhook, new FakeClock());
  await Promise.all(Array.from({ length: 20 }, () => guard.allow()));
  assert.equal(webhook.statusReads, 1);
  await guard.close();
});

test("an engaged switch throws SpendBlocked with scope, state and reason", async () => {
  const webhook = new FakeWebhook();
  webhook.status = { state: "engaged", limit_factor: "0", switch_scope: "openai", detail: { reason: "emergency tier of openai-daily" } };
  const guard = makeGuard(webhook, new FakeClock());
  await assert.rejects(guard.allow(), (e: unknown) => {
    assert.ok(e instanceof SpendBlocked);
    assert.equal(e.scope, "openai/prod");
    assert.equal(e.state, "engaged");
    assert.match(e.reason, /switch on openai: reason emergency tier of openai-daily/);
    return true;
  });
  await guard.close();
});

test("restoring throttles to max calls per second times the limit factor", async () => {
  const webhook = new FakeWebhook();
  webhook.status = { state: "restoring", limit_factor: "0.25" };
  const clock = new FakeClock();
  const guard = makeGuard(webhook, clock, { maxCallsPerSecond: 8, cacheMs: 3_600_000 });
  await guard.allow({ wait: false });
  await guard.allow({ wait: false }); // 2 calls a second, at most a second of them at once
  await assert.rejects(guard.allow({ wait: false }), (e: unknown) => {
    assert.ok(e instanceof Throttled);
    assert.equal(e.limitFactor, "0.25");
    assert.ok(Math.abs(e.retryAfterMs - 500) < 1e-6);
    return true;
  });
  const start = clock.now;
  for (let i = 0; i < 10; i++) await guard.allow();
  assert.ok(Math.abs(clock.now - start - 5000) < 1e-6);
  assert.equal(guard.stats.throttledWaits, 10);
  await guard.close();
});

test("an unreachable guard fails open by default, warning once per outage, asked at most every second", async () => {
  const webhook = new FakeWebhook();
  webhook.statusError = new TypeError("fetch failed");
  const clock = new FakeClock();
  const warnings: string[] = [];
  const guard = makeGuard(webhook, clock, { logger: { warn: (m) => warnings.push(m), error: () => {} } });
  for (let i = 0; i < 20; i++) await guard.allow();
  assert.equal(webhook.statusReads, 1);
  clock.now += 1000;
  await guard.allow();
  assert.equal(webhook.statusReads, 2);
  assert.equal(warnings.length, 1);
  assert.match(warnings[0], /ALLOWED \(fail-open\)/);
  assert.equal(guard.stats.outages, 1);
  assert.equal(guard.stats.allowedWhileUnreachable, 21);
  webhook.statusError = null;
  clock.now += 1000;
  await guard.allow();
  webhook.statusError = new TypeError("fetch failed");
  clock.now += 5000;
  await guard.allow();
  assert.equal(guard.stats.outages, 2);
  await guard.close();
});

test("fail-closed throws GuardUnavailable, and a wrong token is an outage, not an open switch", async () => {
  const webhook = new FakeWebhook();
  webhook.statusError = new TypeError("fetch failed");
  const guard = makeGuard(webhook, new FakeClock(), { failOpen: false });
  await assert.rejects(guard.allow(), GuardUnavailable);
  await guard.close();
  const { Guard } = await import("../src/index.js");
  const wrongToken = new Guard("http://guard.test", "whsec_eA==", "wrong-token", "openai/prod", {
    fetch: new FakeWebhook().fetch,
    failOpen: false,
    logger: { warn: () => {}, error: () => {} },
  });
  await assert.rejects(wrongToken.allow(), (e: unknown) => {
    assert.ok(e instanceof GuardUnavailable);
    assert.match(e.reason, /401/);
    assert.doesNotMatch(e.message, /wrong-token/);
    return true;
  });
  await wrongToken.close();
});

test("bad options are refused naming them", async () => {
  const { Guard } = await import("../src/index.js");
  assert.throws(() => new Guard("http://x", "whsec_eA==", "t", ""), /^TypeError: scope/);
  assert.throws(() => new Guard("http://x", "whsec_eA==", "t", "a", { maxCallsPerSecond: 0 }), /^TypeError: maxCallsPerSecond/);
});

test("a guard that times out is not waited for on every call", async () => {
  const webhook = new FakeWebhook();
  const clock = new FakeClock();
  const timesOut = (async () => {
    webhook.statusReads++;
    clock.now += 2000; // the request's timeout
    throw new DOMException("The operation was aborted due to timeout", "TimeoutError");
  }) as typeof fetch;
  const guard = makeGuard(webhook, clock, { fetch: timesOut });
  await guard.allow();
  await guard.allow();
  assert.equal(webhook.statusReads, 1);
  await guard.close();
});

test("a call waiting for its turn sees the switch engage meanwhile", async () => {
  const webhook = new FakeWebhook();
  webhook.status = { state: "restoring", limit_factor: "0.1" };
  const clock = new FakeClock();
  const sleep = async (ms: number) => {
    await clock.sleep(ms);
    webhook.status = { state: "engaged", limit_factor: "0" };
  };
  const guard = makeGuard(webhook, clock, { cacheMs: 500, sleep });
  await guard.allow(); // the one call the bucket holds at 10/s x 0.1
  await assert.rejects(guard.allow(), SpendBlocked); // waits a second for its turn; engaged meanwhile
  await guard.close();
});

test("configuration mistakes are refused naming the argument", () => {
  assert.throws(() => new Guard("guard.example.com", SECRET, "t", "a"), /^TypeError: url/);
  assert.throws(() => new Guard("ftp://guard.example.com", SECRET, "t", "a"), /^TypeError: url/);
  assert.throws(() => new Guard("https://guard.example.com", SECRET, "", "a"), /^TypeError: statusToken/);
});

test("a refused status token is logged as an error", async () => {
  const webhook = new FakeWebhook();
  const logged: string[] = [];
  const guard = new Guard("http://guard.test", SECRET, "wrong-token", "openai/prod", {
    fetch: webhook.fetch,
    logger: { warn: (m) => logged.push(`warn ${m}`), error: (m) => logged.push(`error ${m}`) },
  });
  await guard.allow();
  assert.equal(logged.length, 1);
  assert.match(logged[0], /^error .*cannot be read.*401/);
  await guard.close();
});

test("a limit_factor that is not a decimal from 0 to 1 is an outage", async () => {
  for (const factor of ["abc", "nan", "inf", "-0.5", "1.5", ""]) {
    const webhook = new FakeWebhook();
    webhook.status = { state: "restoring", limit_factor: factor };
    const guard = makeGuard(webhook, new FakeClock(), { failOpen: false });
    await assert.rejects(guard.allow(), (e: unknown) => {
      assert.ok(e instanceof GuardUnavailable, `${factor}: ${String(e)}`);
      assert.match(e.reason, /limit_factor/);
      return true;
    });
    assert.equal(guard.stats.guardUnreachable, 1);
    await guard.close();
  }
});
