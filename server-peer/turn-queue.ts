/**
 * Work done a slice per event-loop turn (issue 11, "Heavy traffic" in
 * ARCHITECTURE.md). What thousands of connections ask for together (the
 * server's side of their close handshakes when they all go: the flood
 * bench's 2,000 connections) would otherwise run in one turn of the event
 * loop, and a connected device's message read in that turn waits for all
 * of it. Queued here, it runs in arrival order, at most `perTurnMax` items
 * per turn and no more once the turn took `turnMsMax` (at least one per
 * turn): the poll for I/O between two slices reads what connected devices
 * sent.
 */
export class TurnQueue<T> {
  private readonly waiting: T[] = []
  private head = 0
  private scheduled: NodeJS.Immediate | undefined
  private turnCount = 0

  /**
   * `run` does one item's work; it returns false when there was nothing
   * to do (a socket gone while it waited), which does not count against
   * the turn's `perTurnMax`.
   */
  constructor(
    private readonly run: (item: T) => boolean,
    private readonly perTurnMax: () => number,
    private readonly turnMsMax: () => number,
  ) {}

  /** Items waiting. */
  get size(): number {
    return this.waiting.length - this.head
  }

  /** Turns run so far (what a test counts instead of timing). */
  get turns(): number {
    return this.turnCount
  }

  add(item: T): void {
    this.waiting.push(item)
    this.scheduled ??= setImmediate(() => this.turn())
  }

  /** Takes every waiting item out (nothing more runs); the caller lets them go. */
  close(): T[] {
    if (this.scheduled !== undefined) clearImmediate(this.scheduled)
    this.scheduled = undefined
    const left = this.waiting.slice(this.head)
    this.waiting.length = 0
    this.head = 0
    return left
  }

  private turn(): void {
    this.scheduled = undefined
    this.turnCount++
    const started = performance.now()
    const perTurnMax = this.perTurnMax()
    const turnMsMax = this.turnMsMax()
    for (let done = 0; done < perTurnMax && this.head < this.waiting.length;) {
      if (done > 0 && performance.now() - started >= turnMsMax) break
      const item = this.waiting[this.head] as T
      this.waiting[this.head] = undefined as T
      this.head++
      try {
        if (this.run(item)) done++
      } catch {
        // One item's failure is its own (its socket is unusable); the
        // queue goes on.
        done++
      }
    }
    if (this.head >= this.waiting.length) {
      this.waiting.length = 0
      this.head = 0
    } else {
      // Compacted now and then: a long queue is not copied per turn.
      if (this.head > 1_024 && this.head * 2 > this.waiting.length) {
        this.waiting.splice(0, this.head)
        this.head = 0
      }
      this.scheduled = setImmediate(() => this.turn())
    }
  }
}
