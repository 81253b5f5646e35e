import { randomUUID } from "node:crypto";
import { Webhook } from "standardwebhooks";
import { ReportRejected } from "./errors.js";
import type { Logger, Stats } from "./guard.js";
import { Ring } from "./ring.js";

/** A usage record (docs/budgets.md#usage-records); id, scope and timestamp are filled in when absent. */
export interface UsageRecord {
  id?: string;
  scope?: string;
  provider?: string;
  model?: string;
  tokens_in?: number;
  tokens_out?: number;
  tokens_cached?: number;
  tokens_cache_write?: number;
  requests?: number;
  batch?: boolean;
  cost?: { amount: string | number; currency: string };
  timestamp?: string;
  covers_minutes?: number;
  user?: string;
  endpoint?: string;
  feature?: string;
}

const MAX_BODY_BYTES = 256 * 1024; // the webhook answers 413 above this (docs/webhook.md)
const MAX_BATCH_RECORDS = 1000;
const RECORD_ID = /^[A-Za-z0-9._:-]{1,128}$/;
const RETRYABLE = new Set([408, 409, 429]);
const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 30_000;
const RECORD_FIELD = /^records\[(\d+)\]/;
const PREFIX = '{"records":[';
const SUFFIX = "]}";

interface Queued {
  id: string;
  json: string;
  bytes: number;
}

interface Waiting {
  id: string;
  record: UsageRecord;
}

export interface ReporterOptions {
  url: string;
  usageSecret: string;
  scope: string;
  sender?: string;
  stats: Stats;
  fetch: typeof fetch;
  timeoutMs: number;
  maxQueue: number;
  flushIntervalMs: number;
  maxBatchRecords: number;
  maxRetries: number;
  exitTimeoutMs: number;
  onError: (error: Error) => void;
  logger: Logger;
  sleep: (ms: number) => Promise<void>;
}

// one beforeExit listener for every open Reporter (one each would leak listeners, and warn past 10)
const openReporters = new Set<Reporter>();
function flushOpenReporters(): void {
  for (const reporter of openReporters) reporter.onBeforeExit();
}

/** A bounded queue of usage records, sent in signed batches by an unref'd timer. */
export class Reporter {
  private readonly signer: Webhook;
  private readonly queue: Ring<Waiting>;
  private timer: NodeJS.Timeout | null = null;
  private sending: Promise<void> | null = null;
  private inFlight = 0; // records of the batch being sent
  private abandon: (() => void) | null = null;
  private abandoned: Promise<void>;
  private closed = false;
  private exitFlush: Promise<boolean> | null = null;
  readonly onBeforeExit = () => {
    if (this.pending() > 0 && this.exitFlush === null) {
      this.exitFlush = this.flush(this.options.exitTimeoutMs).then((done) => {
        if (done) this.exitFlush = null; // the loop may go on (beforeExit work): flush again next time
        else this.giveUp("at exit");
        return done;
      });
    }
  };

  constructor(private readonly options: ReporterOptions) {
    if (!(options.maxQueue >= 1)) throw new TypeError("maxQueue: must be at least 1");
    if (!(options.maxBatchRecords >= 1 && options.maxBatchRecords <= MAX_BATCH_RECORDS)) {
      throw new TypeError(`maxBatchRecords: must be 1 to ${MAX_BATCH_RECORDS}`);
    }
    this.signer = new Webhook(options.usageSecret);
    this.queue = new Ring(options.maxQueue);
    this.abandoned = new Promise((resolve) => (this.abandon = resolve));
    openReporters.add(this);
    if (openReporters.size === 1) process.on("beforeExit", flushOpenReporters);
  }

  add(record: UsageRecord): string {
    if (this.closed) throw new Error("spendguard: report() after close()");
    if (record === null || typeof record !== "object" || Array.isArray(record)) {
      throw new TypeError("record: must be an object (docs/budgets.md#usage-records)");
    }
    const id = record.id ?? randomUUID().replaceAll("-", "");
    if (typeof id !== "string" || !RECORD_ID.test(id)) {
      throw new TypeError("id: must be 1 to 128 letters, digits, `.`, `_`, `-`, `:`");
    }
    refuseNonFinite(record, "");
    // encoded when sent: the caller's cost stays a copy and a push
    const full = { ...record, id, scope: record.scope ?? this.options.scope, timestamp: record.timestamp ?? nowRfc3339() };
    const stats = this.options.stats;
    if (this.queue.push({ id, record: full })) {
      stats.recordsDroppedQueueFull++;
      if (stats.recordsDroppedQueueFull === 1 || stats.recordsDroppedQueueFull % 1000 === 0) {
        this.options.logger.warn(
          `spendguard: usage queue full (${this.options.maxQueue} records): dropping the oldest (${stats.recordsDroppedQueueFull} dropped so far)`,
        );
      }
    }
    stats.recordsQueued++;
    if (this.waiting() === this.options.maxBatchRecords) {
      setImmediate(() => this.kick()); // after the caller's code: report() never encodes or signs
    } else if (this.timer === null && this.sending === null) {
      this.timer = setTimeout(() => this.kick(), this.options.flushIntervalMs);
      this.timer.unref(); // a queued report never keeps the process alive (beforeExit sends it)
    }
    return id;
  }

  async flush(timeoutMs?: number): Promise<boolean> {
    this.kick();
    const done = (async () => {
      while (this.sending) await this.sending;
      return this.waiting() === 0;
    })();
    if (timeoutMs === undefined) return done;
    let timeout: NodeJS.Timeout | undefined;
    const expired = new Promise<boolean>((resolve) => (timeout = setTimeout(() => resolve(false), timeoutMs)));
    try {
      return await Promise.race([done, expired]);
    } finally {
      clearTimeout(timeout);
    }
  }

  async close(timeoutMs: number): Promise<boolean> {
    if (this.closed) return this.waiting() === 0;
    this.closed = true; // from now on report() is refused: nothing would send it
    const done = await this.flush(timeoutMs);
    openReporters.delete(this);
    if (openReporters.size === 0) process.off("beforeExit", flushOpenReporters);
    if (this.timer) clearTimeout(this.timer);
    if (!done) this.giveUp("at close");
    return done;
  }

  private pending(): number {
    return this.waiting() + (this.sending ? 1 : 0);
  }

  private waiting(): number {
    return this.queue.length;
  }

  private giveUp(when: string): void {
    // the batch still being retried included
    this.options.logger.error(`spendguard: ${this.waiting() + this.inFlight} usage records not sent ${when}`);
    this.abandon?.();
  }

  private kick(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (this.sending || this.waiting() === 0) return;
    this.sending = this.drain().finally(() => {
      this.sending = null;
    });
  }

  private async drain(): Promise<void> {
    while (this.waiting() > 0) {
      const batch = this.takeBatch();
      this.inFlight = batch.length;
      try {
        await this.send(batch);
      } catch (e) {
        this.options.stats.recordsDroppedAfterRetries += batch.length;
        this.options.onError(e instanceof Error ? e : new Error(String(e)));
      } finally {
        this.inFlight = 0;
      }
    }
  }

  private takeBatch(): Queued[] {
    const batch: Queued[] = [];
    let size = PREFIX.length + SUFFIX.length;
    while (this.waiting() > 0 && batch.length < this.options.maxBatchRecords) {
      const { id, record } = this.queue.peek()!;
      let json: string;
      try {
        json = JSON.stringify(record);
      } catch (e) {
        // a record JSON cannot hold (a BigInt, a cycle): refused alone, surfaced
        this.queue.shift();
        this.reject([{ id, json: "", bytes: 0 }], 0, `the record is not JSON: ${e instanceof Error ? e.message : String(e)}`, null);
        continue;
      }
      const next = { id, json, bytes: Buffer.byteLength(json) };
      const added = next.bytes + (batch.length ? 1 : 0);
      if (batch.length && size + added > MAX_BODY_BYTES) break;
      this.queue.shift();
      batch.push(next);
      size += added;
    }
    return batch;
  }

  private async send(batch: Queued[]): Promise<void> {
    while (batch.length) {
      const body = PREFIX + batch.map((r) => r.json).join(",") + SUFFIX;
      if (Buffer.byteLength(body) > MAX_BODY_BYTES) {
        return this.reject(batch, 413, "a single record is over 256 KiB", null);
      }
      // one message id per batch content: every retry of it is the same message
      const messageId = `msg_${randomUUID().replaceAll("-", "")}`;
      const answer = await this.deliver(messageId, body);
      if (typeof answer === "string") {
        this.options.stats.recordsDroppedAfterRetries += batch.length;
        this.options.onError(new Error(`usage batch of ${batch.length} records not delivered: ${answer}`));
        return;
      }
      if (answer.status >= 200 && answer.status < 300) {
        this.options.stats.batchesSent++;
        this.options.stats.recordsSent += batch.length;
        return;
      }
      const { error, field } = answer;
      const match = RECORD_FIELD.exec(field ?? "");
      const index = match ? Number(match[1]) : -1;
      if (index >= 0 && index < batch.length) {
        // one record refused the whole batch: surface it with every record holding the same value
        // in that field (refused alike: not one request each), send the others again
        const refused = sameValue(batch, index, field!);
        this.reject(batch.filter((_, i) => refused.has(i)), answer.status, error, field);
        batch = batch.filter((_, i) => !refused.has(i));
        continue;
      }
      return this.reject(batch, answer.status, error, field);
    }
  }

  /** Posts one signed batch, retrying what may succeed later; a string says why it gave up. */
  private async deliver(messageId: string, body: string): Promise<{ status: number; error: string; field: string | null } | string> {
    let last = "";
    for (let attempt = 0; attempt <= this.options.maxRetries; attempt++) {
      if (attempt) this.options.stats.retries++;
      const now = new Date();
      const headers: Record<string, string> = {
        "content-type": "application/json",
        "webhook-id": messageId,
        "webhook-timestamp": String(Math.floor(now.getTime() / 1000)),
        "webhook-signature": this.signer.sign(messageId, now, body),
      };
      if (this.options.sender) headers["spendguard-sender"] = this.options.sender;
      let retryAfter: number | null = null;
      try {
        const answer = await this.options.fetch(`${this.options.url}/usage`, {
          method: "POST",
          headers,
          body,
          signal: AbortSignal.timeout(this.options.timeoutMs),
        });
        const text = await answer.text();
        if (answer.status < 500 && !RETRYABLE.has(answer.status)) {
          let error = text.slice(0, 200);
          let field: string | null = null;
          try {
            const parsed = JSON.parse(text) as { error?: unknown; field?: unknown };
            error = String(parsed.error ?? "");
            field = typeof parsed.field === "string" ? parsed.field : null;
          } catch {
            // not JSON: the text is the error
          }
          return { status: answer.status, error, field };
        }
        last = `answered ${answer.status}`;
        retryAfter = parseRetryAfter(answer.headers.get("retry-after"));
      } catch (e) {
        last = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
      }
      if (attempt === this.options.maxRetries) break;
      const stopped = await Promise.race([
        this.options.sleep(retryAfter ?? backoff(attempt)).then(() => false),
        this.abandoned.then(() => true),
      ]);
      if (stopped) return `${last}; given up after ${attempt} retries (closing)`;
    }
    return `${last}; given up after ${this.options.maxRetries} retries`;
  }

  private reject(batch: Queued[], status: number, error: string, field: string | null): void {
    this.options.stats.recordsRejected += batch.length;
    this.options.onError(new ReportRejected(status, error, field, batch.map((r) => r.id)));
  }
}

/** NaN and Infinity are not JSON (JSON.stringify would send null): refused at report(), naming the field. */
function refuseNonFinite(value: unknown, path: string): void {
  if (typeof value === "number" && !Number.isFinite(value)) {
    throw new TypeError(`${path || "record"}: must be a finite number, not ${value}`);
  }
  if (Array.isArray(value)) value.forEach((item, i) => refuseNonFinite(item, `${path}[${i}]`));
  else if (value !== null && typeof value === "object") {
    for (const [key, item] of Object.entries(value)) refuseNonFinite(item, path ? `${path}.${key}` : key);
  }
}

const MISSING = Symbol("missing");

/** The indexes of the records whose value at `field` (records[i].a.b) equals record `index`'s. */
function sameValue(batch: Queued[], index: number, field: string): Set<number> {
  const path = field.replace(RECORD_FIELD, "").split(".").filter((key) => key !== "");
  if (path.length === 0) return new Set([index]); // the record as a whole: nothing to compare
  const valueAt = (json: string): string | typeof MISSING => {
    let value: unknown = JSON.parse(json);
    for (const key of path) {
      if (value === null || typeof value !== "object" || !Object.hasOwn(value, key)) return MISSING;
      value = (value as Record<string, unknown>)[key];
    }
    return JSON.stringify(value);
  };
  const refusedValue = valueAt(batch[index].json);
  if (refusedValue === MISSING) return new Set([index]);
  return new Set(batch.flatMap((r, i) => (i === index || valueAt(r.json) === refusedValue ? [i] : [])));
}

/** Exponential backoff with full jitter: senders that failed together do not retry together. */
export function backoff(attempt: number): number {
  return Math.random() * Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** attempt);
}

/** Retry-After in seconds or as an HTTP date, in ms (capped: a bogus far date must not stall us). */
export function parseRetryAfter(value: string | null): number | null {
  if (!value) return null;
  let ms = Number(value) * 1000;
  if (Number.isNaN(ms)) {
    const when = Date.parse(value);
    if (Number.isNaN(when)) return null;
    ms = when - Date.now();
  }
  return Math.max(0, Math.min(ms, 300_000));
}

let lastSecond = -1;
let lastStamp = "";

/** Now to the second (formatted once a second: report() is on the caller's path). */
function nowRfc3339(): string {
  const second = Math.floor(Date.now() / 1000);
  if (second !== lastSecond) {
    lastSecond = second;
    lastStamp = new Date(second * 1000).toISOString().replace(".000Z", "Z");
  }
  return lastStamp;
}
