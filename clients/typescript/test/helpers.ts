import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import { Webhook } from "standardwebhooks";
import { Guard, type GuardOptions } from "../src/index.js";

export const SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
export const STATUS_TOKEN = "t".repeat(40);

/** A clock the tests move; sleeping moves it (no test waits for real time). */
export class FakeClock {
  now = 1_000_000;
  slept: number[] = [];
  read = () => this.now;
  sleep = async (ms: number) => {
    this.slept.push(ms);
    this.now += ms;
  };
}

export interface Delivery {
  webhookId: string;
  body: string;
  ids: string[];
  records: Record<string, unknown>[];
}

/** The webhook's contract as docs/webhook.md states it, as a `fetch`: verifies the signature,
 *  refuses bodies over 256 KiB, counts a record id once; `script` answers differently. */
export class FakeWebhook {
  status: Record<string, unknown> = { state: "open", limit_factor: "1" };
  statusReads = 0;
  statusError: Error | null = null;
  deliveries: Delivery[] = [];
  counted = new Map<string, Record<string, unknown>>();
  script: ((d: Delivery) => Response | null)[] = [];

  fetch = (async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const url = new URL(String(input));
    const headers = new Headers(init?.headers);
    if (url.pathname === "/status") {
      this.statusReads++;
      if (this.statusError) throw this.statusError;
      if (headers.get("authorization") !== `Bearer ${STATUS_TOKEN}`) return Response.json({ error: "unauthorized" }, { status: 401 });
      return Response.json({ ...this.status, scope: url.searchParams.get("scope") });
    }
    if (url.pathname !== "/usage" || init?.method !== "POST") throw new Error(`unexpected ${init?.method} ${url}`);
    const body = String(init.body);
    new Webhook(SECRET).verify(body, Object.fromEntries(headers.entries())); // throws when wrong
    const records = (JSON.parse(body) as { records: Record<string, unknown>[] }).records;
    const delivery = { webhookId: headers.get("webhook-id")!, body, ids: records.map((r) => String(r.id)), records };
    this.deliveries.push(delivery);
    if (Buffer.byteLength(body) > 256 * 1024) return Response.json({ error: "too large" }, { status: 413 });
    const step = this.script.shift();
    const scripted = step ? step(delivery) : null;
    return scripted ?? this.count(records);
  }) as typeof fetch;

  count(records: Record<string, unknown>[]): Response {
    let accepted = 0;
    let duplicates = 0;
    for (const r of records) {
      if (this.counted.has(String(r.id))) duplicates++;
      else {
        this.counted.set(String(r.id), r);
        accepted++;
      }
    }
    return Response.json({ accepted, duplicates, alerts_published: 0 });
  }
}

export function makeGuard(webhook: FakeWebhook, clock: FakeClock, options: GuardOptions = {}): Guard {
  return new Guard("http://guard.test", SECRET, STATUS_TOKEN, "openai/prod", {
    fetch: webhook.fetch,
    clock: clock.read,
    sleep: clock.sleep,
    flushIntervalMs: 3_600_000, // the tests flush explicitly
    logger: { warn: () => {}, error: () => {} },
    ...options,
  });
}

export const OPENAI_KEY = "sk-test-openai-key";
export const ANTHROPIC_KEY = "sk-ant-test-key";

/** The OpenAI/Anthropic stand-ins (clients/standins/llm_apis.py, Python's standard library only). */
export async function startStandin(): Promise<{ url: string; process: ChildProcess; calls(): Promise<StandinCall[]> }> {
  const script = fileURLToPath(new URL("../../../standins/llm_apis.py", import.meta.url));
  const python = process.env.SPENDGUARD_PYTHON ?? "python3";
  const child = spawn(python, [script, "--openai-key", OPENAI_KEY, "--anthropic-key", ANTHROPIC_KEY], { stdio: ["pipe", "pipe", "inherit"] });
  const [line] = (await once(createInterface({ input: child.stdout! }), "line")) as [string];
  const url = `http://${(JSON.parse(line) as { listening: string }).listening}`;
  return {
    url,
    process: child,
    calls: async () => ((await (await fetch(`${url}/_standin/usage`)).json()) as { calls: StandinCall[] }).calls,
  };
}

export interface StandinCall {
  provider: string;
  model: string;
  request_id: string;
  stream: boolean;
  usage: { input: number; cached: number; cache_write: number; output: number };
}
