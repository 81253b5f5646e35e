/** Base of every error this package throws. */
export class SpendguardError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** The kill switch covering the scope is engaged: do not spend. */
export class SpendBlocked extends SpendguardError {
  constructor(
    readonly scope: string,
    readonly state: string,
    readonly reason: string,
  ) {
    super(`spend blocked for ${scope}: switch ${state} (${reason})`);
  }
}

/** The guard could not be read and the Guard was made with failOpen: false. */
export class GuardUnavailable extends SpendBlocked {
  constructor(scope: string, reason: string) {
    super(scope, "unknown", reason);
  }
}

/** The switch is restoring and this call is over its share (thrown only with wait: false). */
export class Throttled extends SpendguardError {
  constructor(
    readonly scope: string,
    readonly limitFactor: string,
    readonly retryAfterMs: number,
  ) {
    super(`throttled for ${scope}: limit factor ${limitFactor}, retry in ${Math.round(retryAfterMs)} ms`);
  }
}

/** The webhook refused a batch (a 4xx other than 408/409/429): it is not retried. */
export class ReportRejected extends SpendguardError {
  constructor(
    readonly status: number,
    readonly error: string,
    readonly field: string | null,
    readonly recordIds: string[],
  ) {
    super(`usage batch refused with ${status}${field ? ` at ${field}` : ""}: ${error}`);
  }
}
