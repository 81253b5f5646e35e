/** A fixed-capacity FIFO: pushing onto a full ring drops the oldest, so memory never grows past it. */
export class Ring<T> {
  private readonly slots: (T | undefined)[];
  private start = 0;
  private size = 0;

  constructor(readonly capacity: number) {
    this.slots = new Array<T | undefined>(capacity);
  }

  get length(): number {
    return this.size;
  }

  /** Appends; returns true when the oldest item was dropped to make room. */
  push(item: T): boolean {
    const full = this.size === this.capacity;
    if (full) this.shift();
    this.slots[(this.start + this.size) % this.capacity] = item;
    this.size++;
    return full;
  }

  peek(): T | undefined {
    return this.size ? this.slots[this.start] : undefined;
  }

  shift(): T | undefined {
    if (!this.size) return undefined;
    const item = this.slots[this.start];
    this.slots[this.start] = undefined; // no longer referenced: collectable
    this.start = (this.start + 1) % this.capacity;
    this.size--;
    return item;
  }
}
