/** A token bucket whose rate follows the switch's limit factor (tokens per second). */
export class TokenBucket {
  private rate = -1; // no rate set yet
  private tokens = 0;
  private updated: number;

  constructor(private readonly clock: () => number) {
    this.updated = clock();
  }

  setRate(rate: number): void {
    this.refill();
    if (rate === this.rate) return;
    // a lower rate also lowers what was saved up under the old one; the first rate starts full
    const first = this.rate < 0;
    this.rate = rate;
    this.tokens = first ? this.capacity() : Math.min(this.tokens, this.capacity());
  }

  /** Takes a token if one is there (returns 0), else returns the milliseconds until one is. */
  take(): number {
    this.refill();
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return 0;
    }
    if (this.rate <= 0) return Infinity;
    return ((1 - this.tokens) / this.rate) * 1000;
  }

  private capacity(): number {
    return Math.max(1, this.rate);
  }

  private refill(): void {
    const now = this.clock();
    if (this.rate >= 0) {
      this.tokens = Math.min(this.capacity(), this.tokens + ((now - this.updated) / 1000) * this.rate);
    }
    this.updated = now;
  }
}
