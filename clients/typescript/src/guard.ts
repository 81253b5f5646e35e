import { GuardUnavailable, SpendBlocked, Throttled } from "./errors.js";
import { Reporter, type UsageRecord } from "./reporter.js";
import { TokenBucket } from "./throttle.js";

/** An unreachable guard is asked again after this long at most, not on every call. */
const UNREACHABLE_RETRY_MS = 1000;
/** The switch's limit_factor: a decimal string from 0 to 1 (anything else is an unreadable guard). */
const LIMIT_FACTOR = /^(0|1)(\.[0-9]+)?$/;

/** What `GET /status` answered for the scope. */
export interface SwitchStatus {
  state: string; // open | engaged | restoring
  limitFactor: string; // a decimal string, "1" when open
  switchScope: string | null;
  detail: unknown;
}

/** Where warnings and errors go (default: console.warn / console.error). */
export interface Logger {
  warn(message: string): void;
  error(message: string): void;
}

export interface GuardOptions {
  /** How long a kill-switch read is used (default 5000 ms). */
  cacheMs?: number;
  /** Allow calls while the guard cannot be read (default true, with a warning once per outage). */
  failOpen?: boolean;
  /** The full rate while restoring, scaled by the limit factor (default 10 calls/s). */
  maxCallsPerSecond?: number;
  /** The sender id, for a webhook with per-sender secrets (header spendguard-sender). */
  sender?: string;
  timeoutMs?: number;
  maxQueue?: number;
  flushIntervalMs?: number;
  maxBatchRecords?: number;
  maxRetries?: number;
  /** How long flushing at process exit may take (default 5000 ms). */
  exitTimeoutMs?: number;
  /** Called with each ReportRejected or undeliverable batch (default: logged as an error). */
  onError?: (error: Error) => void;
  logger?: Logger;
  fetch?: typeof fetch;
  clock?: () => number;
  sleep?: (ms: number) => Promise<void>;
}

/** Counters an application can export (they only grow). */
export class Stats {
  guardUnreachable = 0;
  outages = 0;
  allowedWhileUnreachable = 0;
  throttledWaits = 0;
  recordsQueued = 0;
  recordsSent = 0;
  recordsDroppedQueueFull = 0;
  recordsRejected = 0;
  recordsDroppedAfterRetries = 0;
  batchesSent = 0;
  retries = 0;
  /** Wrapped calls whose usage could not be queued (logged as errors). */
  reportsLost = 0;
}

/** One application's link to spendguard for one scope: `allow()` before spending, `report()` after. */
export class Guard {
  readonly url: string;
  readonly stats = new Stats();
  private readonly cacheMs: number;
  private readonly failOpen: boolean;
  private readonly maxCallsPerSecond: number;
  private readonly fetch: typeof fetch;
  private readonly clock: () => number;
  private readonly sleep: (ms: number) => Promise<void>;
  private readonly timeoutMs: number;
  /** Where the client's warnings and errors go (the wrappers use it too). */
  readonly logger: Logger;
  private readonly bucket: TokenBucket;
  private readonly reporter: Reporter;
  private cached: SwitchStatus | null = null;
  private cachedUntil = -Infinity;
  private statusError: string | null = null;
  private inOutage = false;
  private refreshing: Promise<void> | null = null;

  constructor(
    url: string,
    usageSecret: string,
    private readonly statusToken: string,
    readonly scope: string,
    options: GuardOptions = {},
  ) {
    if (typeof url !== "string" || !/^https?:\/\//.test(url)) {
      throw new TypeError("url: must be the guard's http:// or https:// address");
    }
    if (typeof statusToken !== "string" || statusToken === "") {
      throw new TypeError("statusToken: must be the guard's (non-empty) status token");
    }
    if (typeof scope !== "string" || scope === "") {
      throw new TypeError("scope: must be a non-empty scope such as openai/prod/key-7f3a");
    }
    this.url = url.replace(/\/+$/, "");
    this.cacheMs = options.cacheMs ?? 5000;
    if (this.cacheMs < 0) throw new TypeError("cacheMs: must be 0 or more");
    this.failOpen = options.failOpen ?? true;
    this.maxCallsPerSecond = options.maxCallsPerSecond ?? 10;
    if (!(this.maxCallsPerSecond > 0)) throw new TypeError("maxCallsPerSecond: must be more than 0");
    this.fetch = options.fetch ?? globalThis.fetch;
    this.clock = options.clock ?? (() => performance.now());
    this.sleep = options.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms)));
    this.timeoutMs = options.timeoutMs ?? 2000;
    this.logger = options.logger ?? { warn: (m) => console.warn(m), error: (m) => console.error(m) };
    this.bucket = new TokenBucket(this.clock);
    this.reporter = new Reporter({
      url: this.url,
      usageSecret,
      scope,
      sender: options.sender,
      stats: this.stats,
      fetch: this.fetch,
      timeoutMs: this.timeoutMs,
      maxQueue: options.maxQueue ?? 10_000,
      flushIntervalMs: options.flushIntervalMs ?? 1000,
      maxBatchRecords: options.maxBatchRecords ?? 1000,
      maxRetries: options.maxRetries ?? 8,
      exitTimeoutMs: options.exitTimeoutMs ?? 5000,
      onError: options.onError ?? ((e) => this.logger.error(`spendguard: ${e.message}`)),
      logger: this.logger,
      // a retry's wait never keeps the process alive: at exit, beforeExit's bounded flush decides
      sleep: options.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms).unref())),
    });
  }

  /** The switch as last read (at most cacheMs old); null while the guard cannot be read. */
  async status(): Promise<SwitchStatus | null> {
    if (this.clock() < this.cachedUntil) return this.cached;
    this.refreshing ??= this.refresh().finally(() => {
      this.refreshing = null;
    });
    await this.refreshing;
    return this.cached;
  }

  /**
   * Resolves when the call may spend. Throws SpendBlocked when the switch is engaged
   * (GuardUnavailable when the guard cannot be read and failOpen is false). While the switch is
   * restoring, calls are throttled to maxCallsPerSecond × limit_factor: with wait (the default)
   * the call waits for its turn, with `{ wait: false }` it throws Throttled.
   */
  async allow(options: { wait?: boolean } = {}): Promise<void> {
    const wait = options.wait ?? true;
    for (;;) {
      // read again after each wait: a switch that engaged meanwhile stops the call
      const status = this.clock() < this.cachedUntil ? this.cached : await this.status();
      if (status === null) {
        if (this.failOpen) {
          this.stats.allowedWhileUnreachable++;
          return;
        }
        throw new GuardUnavailable(this.scope, this.statusError ?? "guard unreachable");
      }
      if (status.state === "open") return;
      if (status.state === "engaged") throw new SpendBlocked(this.scope, status.state, reasonOf(status));
      const delay = this.bucket.take();
      if (delay === 0) return;
      if (!wait || delay === Infinity) throw new Throttled(this.scope, status.limitFactor, delay);
      this.stats.throttledWaits++;
      await this.sleep(delay);
    }
  }

  /**
   * Queues one usage record (docs/budgets.md#usage-records) and returns its id. Never waits for
   * the network. Defaults: the Guard's scope, now, a new unique id (kept across retries).
   */
  report(record: UsageRecord): string {
    return this.reporter.add(record);
  }

  /** Sends everything queued now; true when the queue was emptied within timeoutMs. */
  flush(timeoutMs?: number): Promise<boolean> {
    return this.reporter.flush(timeoutMs);
  }

  /** Flushes and stops the background timer (also done before the process exits). */
  close(timeoutMs = 10_000): Promise<boolean> {
    return this.reporter.close(timeoutMs);
  }

  private async refresh(): Promise<void> {
    const now = this.clock();
    let status: SwitchStatus;
    let refused = false; // a refused token is a configuration mistake, not an outage that will pass
    try {
      const answer = await this.fetch(`${this.url}/status?scope=${encodeURIComponent(this.scope)}`, {
        headers: { authorization: `Bearer ${this.statusToken}` },
        signal: AbortSignal.timeout(this.timeoutMs),
      });
      const body = (await answer.json().catch(() => null)) as Record<string, unknown> | null;
      if (answer.status !== 200) {
        refused = answer.status === 401 || answer.status === 403;
        throw new Error(`GET /status answered ${answer.status}: ${String(body?.error ?? "")}`);
      }
      if (!body || typeof body.state !== "string") throw new Error("GET /status answered without a state");
      const limitFactor = String(body.limit_factor ?? "1");
      if (!LIMIT_FACTOR.test(limitFactor) || Number(limitFactor) > 1) {
        throw new Error(`GET /status answered limit_factor ${JSON.stringify(limitFactor.slice(0, 40))}, not a decimal from 0 to 1`);
      }
      status = {
        state: body.state,
        limitFactor,
        switchScope: typeof body.switch_scope === "string" ? body.switch_scope : null,
        detail: body.detail ?? null,
      };
    } catch (e) {
      this.stats.guardUnreachable++;
      this.cached = null;
      this.statusError = e instanceof Error ? `${e.message}${causeOf(e)}` : String(e);
      // counted from the failure, not the start: a read that timed out must not leave the next
      // call to wait for the same timeout again
      this.cachedUntil = this.clock() + Math.min(this.cacheMs, UNREACHABLE_RETRY_MS);
      if (!this.inOutage) {
        this.inOutage = true;
        this.stats.outages++;
        (refused ? this.logger.error : this.logger.warn).call(
          this.logger,
          `spendguard: the guard at ${this.url} cannot be read (${this.statusError}); calls are ` +
            `${this.failOpen ? "ALLOWED (fail-open)" : "REFUSED (fail-closed)"} until it answers`,
        );
      }
      return;
    }
    if (this.inOutage) {
      this.inOutage = false;
      this.logger.warn(`spendguard: the guard at ${this.url} answers again`);
    }
    this.cached = status;
    this.statusError = null;
    this.cachedUntil = now + this.cacheMs;
    const factor = status.state === "engaged" ? 0 : Number(status.limitFactor);
    this.bucket.setRate(this.maxCallsPerSecond * factor);
  }
}

function reasonOf(status: SwitchStatus): string {
  const where = status.switchScope ? `switch on ${status.switchScope}` : "switch engaged";
  const detail = status.detail as Record<string, unknown> | null;
  if (detail && typeof detail === "object") {
    for (const key of ["reason", "budget", "alert_id"]) {
      if (detail[key]) return `${where}: ${key} ${String(detail[key])}`;
    }
  }
  return where;
}

function causeOf(e: Error): string {
  const cause = (e as { cause?: unknown }).cause;
  return cause instanceof Error ? ` (${cause.message})` : "";
}
