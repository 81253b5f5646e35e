/**
 * The TypeScript client against the real webhook (`spendguard serve`, started by
 * clients/integration/serve.py), with the official SDKs pointed at the OpenAI and Anthropic
 * stand-ins. Skipped, loudly, only when no spendguard binary with a `serve` subcommand exists.
 */
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import Anthropic from "@anthropic-ai/sdk";
import OpenAI from "openai";
import { Guard, SpendBlocked, Throttled, wrapAnthropic, wrapOpenAI } from "../src/index.js";
import { startStandin, type StandinCall } from "./helpers.js";

const python = process.env.SPENDGUARD_PYTHON ?? "python3";
const serveScript = fileURLToPath(new URL("../../../integration/serve.py", import.meta.url));

interface Served {
  url: string;
  metrics_url: string;
  usage_secret: string;
  status_token: string;
  store: string;
}

async function startServe(): Promise<{ served: Served | null; missing?: string; stop(): void }> {
  const child = spawn(python, [serveScript, mkdtempSync(join(tmpdir(), "spendguard-ts-it-"))], { stdio: ["pipe", "pipe", "inherit"] });
  const [line] = (await once(createInterface({ input: child.stdout! }), "line")) as [string];
  const answer = JSON.parse(line) as Served & { missing?: string };
  return { served: answer.missing ? null : answer, missing: answer.missing, stop: () => child.stdin!.end() };
}

/** Forwards to the webhook; with loseNext set, forwards one POST and drops the connection
 *  instead of answering (the webhook counted it, the client never heard). */
async function losingProxy(target: string) {
  const state = { loseNext: false, lost: [] as string[], forwarded: [] as { webhookId: string; body: string; answer: Record<string, unknown> }[] };
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", async () => {
      const body = Buffer.concat(chunks).toString();
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(req.headers)) if (!["host", "content-length", "connection"].includes(k)) headers[k] = String(v);
      const answer = await fetch(target + req.url, { method: req.method, headers, body: req.method === "POST" ? body : undefined });
      const text = await answer.text();
      if (req.method === "POST") {
        const webhookId = String(req.headers["webhook-id"]);
        state.forwarded.push({ webhookId, body, answer: JSON.parse(text) });
        if (state.loseNext) {
          state.loseNext = false;
          state.lost.push(webhookId);
          req.socket.destroy();
          return;
        }
      }
      res.writeHead(answer.status, { "content-type": answer.headers.get("content-type") ?? "application/json" });
      res.end(text);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { state, url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, close: () => server.close() };
}

// the prices of clients/integration/budgets.toml, per million tokens, in micro-dollars (exact integers)
const PRICES: Record<string, Record<keyof StandinCall["usage"], bigint>> = {
  "gpt-4o": { input: 2_500_000n, cached: 1_250_000n, cache_write: 2_500_000n, output: 10_000_000n },
  "claude-sonnet-4": { input: 3_000_000n, cached: 300_000n, cache_write: 3_750_000n, output: 15_000_000n },
};

/** The cost in units of 10^-12 dollars (tokens × micro-dollars per million tokens). */
function picoCost(call: StandinCall): bigint {
  const price = PRICES[call.model];
  return (Object.keys(price) as (keyof StandinCall["usage"])[]).reduce((sum, k) => sum + BigInt(call.usage[k]) * price[k], 0n);
}

/** A decimal string ("0.0512345") as an exact number of 10^-12 units. */
function pico(amount: string): bigint {
  const [whole, fraction = ""] = amount.split(".");
  return BigInt(whole) * 10n ** 12n + BigInt((fraction + "0".repeat(12)).slice(0, 12));
}

test("a loop of SDK calls crosses the emergency tier, is counted exactly, and a replayed flush counts once", async (t) => {
  const serve = await startServe();
  if (!serve.served) {
    // scripts/test (CI) requires the real webhook: there a missing `serve` fails, it is not skipped
    if (process.env.SPENDGUARD_REQUIRE_SERVE === "1") assert.fail(`SPENDGUARD_REQUIRE_SERVE=1 and no real webhook: ${serve.missing}`);
    console.error(`\n*** SKIPPING the TypeScript client's integration test: ${serve.missing} ***\n`);
    t.skip(`NO REAL WEBHOOK: ${serve.missing}`);
    return;
  }
  const standin = await startStandin();
  const proxy = await losingProxy(serve.served.url);
  const errors: Error[] = [];
  // cacheMs 0: each allow() reads the switch, so the call right after the crossing is refused
  const guard = new Guard(proxy.url, serve.served.usage_secret, serve.served.status_token, "clients/typescript", {
    cacheMs: 0,
    failOpen: false,
    maxCallsPerSecond: 1,
    onError: (e) => errors.push(e),
  });
  try {
    const openai = wrapOpenAI(new OpenAI({ apiKey: "sk-test-openai-key", baseURL: `${standin.url}/v1`, maxRetries: 0 }), guard);
    const anthropic = wrapAnthropic(new Anthropic({ apiKey: "sk-ant-test-key", baseURL: standin.url, maxRetries: 0 }), guard);
    let blocked: SpendBlocked | null = null;
    let n = 0;
    for (; n < 40; n++) {
      try {
        const stream = n % 4 === 1 || n % 4 === 2;
        if (n % 2) {
          const params = { model: "claude-sonnet-4", max_tokens: 64, messages: [{ role: "user" as const, content: "hi" }] };
          if (stream) for await (const _ of await anthropic.messages.create({ ...params, stream: true }));
          else await anthropic.messages.create(params);
        } else {
          const params = { model: "gpt-4o", messages: [{ role: "user" as const, content: "hi" }] };
          if (stream) for await (const _ of await openai.chat.completions.create({ ...params, stream: true }));
          else await openai.chat.completions.create(params);
        }
      } catch (e) {
        if (!(e instanceof SpendBlocked)) throw e;
        blocked = e;
        break;
      }
      if (n === 3) proxy.state.loseNext = true; // this flush's answer is lost: the client sends it again
      assert.equal(await guard.flush(60_000), true);
    }
    assert.ok(blocked, "40 calls did not cross the emergency tier");
    assert.equal(blocked.state, "engaged");
    assert.match(blocked.reason, /^switch on clients: reason EMERGENCY: budget clients-it/);
    await assert.rejects(guard.allow(), SpendBlocked);
    assert.deepEqual(errors, []);

    const calls = await standin.calls();
    assert.equal(calls.length, n);
    assert.ok(n >= 5);
    assert.equal(proxy.state.lost.length, 1);
    const replays = proxy.state.forwarded.filter((f) => f.webhookId === proxy.state.lost[0]);
    assert.equal(replays.length, 2);
    assert.equal(replays[0].body, replays[1].body);
    assert.equal(replays[0].answer.accepted, 1);
    assert.equal(replays[1].answer.accepted, 0);
    assert.equal(replays[1].answer.duplicates, 1);

    // every call counted once, the replayed record as a duplicate (serve's /metrics)
    const metrics = await (await fetch(`${serve.served.metrics_url}/metrics`)).text();
    const countedRecords = (outcome: string) => Number(new RegExp(`^spendguard_usage_records_total\\{outcome="${outcome}"\\} (\\d+)$`, "m").exec(metrics)?.[1]);
    assert.equal(countedRecords("accepted"), n);
    assert.equal(countedRecords("duplicate"), 1);

    const bin = process.env.SPENDGUARD_BIN ?? fileURLToPath(new URL("../../../../target/debug/spendguard", import.meta.url));
    const { stdout } = await promisify(execFile)(bin, ["status", "--json", "--store", serve.served.store]);
    const status = JSON.parse(stdout) as {
      budgets_at_risk: { budget_id: string; window: string; spend: { amount: string } }[];
      kill_switches: { scope: string; state: { state: string } }[];
    };
    const windows = status.budgets_at_risk.filter((w) => w.budget_id === "clients-it" && w.window === "daily");
    assert.equal(windows.length, 1);
    assert.equal(pico(windows[0].spend.amount), calls.reduce((sum, c) => sum + picoCost(c), 0n));
    assert.deepEqual(status.kill_switches.map((s) => [s.scope, s.state.state]), [["clients", "engaged"]]);

    // restored: the switch ramps, and the client throttles to the limit factor instead of failing
    await promisify(execFile)(bin, ["restore", "--scope", "clients", "--yes", "--json", "--store", serve.served.store]);
    const ramp = await guard.status();
    assert.ok(ramp && ramp.state === "restoring" && Number(ramp.limitFactor) < 1, JSON.stringify(ramp));
    await guard.allow({ wait: false }); // the bucket starts with one call
    await assert.rejects(guard.allow({ wait: false }), (e: unknown) => e instanceof Throttled && e.limitFactor === ramp.limitFactor);
  } finally {
    await guard.close();
    proxy.close();
    standin.process.stdin!.end();
    serve.stop();
  }
});
