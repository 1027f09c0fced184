/**
 * The replica's write queue: every change (an own write, bookkeeping, a
 * remote update, a wipe) waits here, and the queue hands the runner one
 * batch at a time: a wipe alone, or the operations up to the next wipe
 * (at most `writeBatchOpsMax`). A batch starts on a microtask, so every
 * call made in the same tick joins it; under steady inbound traffic, a
 * batch of remote updates alone may wait out the remote batch window
 * (ReplicaOptions.remoteBatchWindowMs). While own writes are held (a full
 * sync), only remote updates, bookkeeping and the end of a staged wipe run,
 * and a full sync's staged wipe goes to the runner, which refuses it (one
 * staged document at a time): waiting, it would wait for the round that
 * ends the hold, which cannot start before the full sync's round ends.
 *
 * Invariants: `flushing` is true while a loop (or a compaction in its
 * place) holds the queue, and only one does; `windowTimer` is set only
 * while `flushing` is; `drain()` resolves only once the queue is empty and
 * nothing holds it.
 */
import { limits } from '../../core/limits.js'
import type { DurableGate } from './durable-gate.js'
import type { ReplicaStatus } from './status.js'
import type { PendingOp } from './types.js'

/**
 * A wipe the runner refuses while own writes are held (BatchRunner.flushWipe:
 * one staged document at a time): a full sync's staged wipe. Left queued
 * behind a move's hold it would wait for the move's round, which waits for
 * the full sync's round to end (a device runs one round at a time): a hang.
 * A move's wipe waits instead (the full sync holding is a round of a link
 * that a new hello means closed: it fails and ends the hold soon).
 */
function refusedHeld(op: PendingOp): boolean {
  return op.kind === 'wipe' && op.wipe?.staged === true && op.wipe.generation !== true
}

/** What runs a batch the queue hands over (the batch runner). */
export interface BatchRunners {
  readonly batch: (batch: PendingOp[]) => Promise<void>
  readonly wipe: (op: PendingOp) => Promise<void>
}

/** The queue of one replica's changes. */
export class WriteQueue {
  private queue: PendingOp[] = []
  private readonly idleWaiters: Array<() => void> = []
  /** Callers of hold() waiting for the running batch to end. */
  private readonly holdWaiters: Array<() => void> = []
  private flushing = false
  /** Own writes are held in the queue (see WipeOptions.holdWrites). */
  private holding = false
  /** Wall time (performance.now) the latest batch holding remote updates started. */
  private lastRemoteBatchAt = -Infinity
  /** The pending start of a batch held back by ReplicaOptions.remoteBatchWindowMs. */
  private windowTimer: ReturnType<typeof setTimeout> | undefined

  constructor(
    private readonly options: { readonly remoteBatchWindowMs?: number | undefined },
    private readonly status: ReplicaStatus,
    private readonly gate: DurableGate,
    private readonly run: BatchRunners,
  ) {}

  /** Queues an operation; it runs in a coming batch. */
  push(op: PendingOp): void {
    this.queue.push(op)
    this.scheduleFlush()
  }

  /** Whether nothing is queued and nothing holds the queue. */
  get idle(): boolean {
    return !this.flushing && this.queue.length === 0
  }

  /** Resolves when every queued write is durable and the queue is idle. */
  async drain(): Promise<void> {
    if (!this.flushing && this.queue.length === 0) return
    await new Promise<void>((resolve) => this.idleWaiters.push(resolve))
  }

  /**
   * Holds the queue for a compaction if nothing runs or could run now;
   * false otherwise. The caller ends the hold with endHold.
   */
  tryHold(): boolean {
    if (this.flushing || this.nextRunnable()) return false
    this.flushing = true
    return true
  }

  /**
   * Holds the queue (for a generation switch) once the batch running now,
   * if one is, has ended: what is queued then and later waits, and runs
   * once the caller ends the hold with endHold. Unlike tryHold, a queue
   * that never idles (writes back to back) cannot starve it (a probe: a
   * switch waited as long as writes kept coming, 60 s and more).
   */
  hold(): Promise<void> {
    if (!this.flushing) {
      this.flushing = true
      return Promise.resolve()
    }
    return new Promise((resolve) => this.holdWaiters.push(resolve))
  }

  /** Holds own writes (a wipe with holdWrites or staged), or stops holding them. */
  setHolding(holding: boolean): void {
    this.holding = holding
  }

  /** Whether own writes are held (a staged wipe, or a wipe with holdWrites). */
  get holdingWrites(): boolean {
    return this.holding
  }

  private scheduleFlush(): void {
    if (this.flushing) {
      // Waiting out the remote batch window: a write that may not wait
      // ends it.
      // (The timer first: windowWait reads the whole queue.)
      if (this.windowTimer !== undefined && this.windowWait() === 0) this.endWindow()
      return
    }
    this.flushing = true
    const wait = this.windowWait()
    if (wait > 0) {
      this.windowTimer = setTimeout(() => {
        this.windowTimer = undefined
        // After the event loop's poll for I/O, not in the timers phase: an
        // answer that became due meanwhile goes before the batch.
        setImmediate(() => void this.flushLoop())
      }, wait)
      return
    }
    // A microtask, not a timer: every write issued in the same tick joins
    // the batch, and no real timer runs under the simulator.
    queueMicrotask(() => void this.flushLoop())
  }

  /** Starts the batch waiting out its window (if one is) now. */
  endWindow(): void {
    if (this.windowTimer === undefined) return
    clearTimeout(this.windowTimer)
    this.windowTimer = undefined
    queueMicrotask(() => void this.flushLoop())
  }

  /**
   * How long the next batch should wait for more remote updates to join it
   * (ReplicaOptions.remoteBatchWindowMs), ms; 0 when it starts now: the
   * window is off, a batch with remote updates started long enough ago, the
   * queue holds something other than remote updates or a full batch of
   * them, or own writes are held.
   */
  private windowWait(): number {
    const window = this.options.remoteBatchWindowMs ?? 0
    // A full batch waiting gains nothing; a hold (a device's full sync)
    // has writes waiting that are not its own to delay.
    if (window <= 0 || this.status.closed || this.holding) return 0
    if (this.queue.length >= limits.writeBatchOpsMax) return 0
    const wait = this.lastRemoteBatchAt + window - performance.now()
    if (wait <= 0) return 0
    return this.queue.every((op) => op.kind === 'remote') ? wait : 0
  }

  private async flushLoop(): Promise<void> {
    try {
      for (;;) {
        if (this.holdWaiters.length > 0 || this.windowWait() > 0) break
        const next = this.nextBatch()
        if (next === undefined) break
        this.gate.begin(next.batch !== undefined)
        if (next.batch?.some((op) => op.kind === 'remote') === true)
          this.lastRemoteBatchAt = performance.now()
        try {
          if (next.wipe !== undefined) await this.run.wipe(next.wipe)
          else await this.run.batch(next.batch)
        } finally {
          this.gate.settle()
        }
      }
    } finally {
      this.endHold()
    }
  }

  /**
   * Ends a hold of the queue (flushLoop, or a compaction run in its place):
   * runs what became runnable meanwhile, or wakes drain() when nothing is
   * left.
   */
  endHold(): void {
    // A hold asked for meanwhile takes the queue as it is (still held).
    const waiter = this.holdWaiters.shift()
    if (waiter !== undefined) return waiter()
    this.flushing = false
    if (this.nextRunnable()) this.scheduleFlush()
    else if (this.queue.length === 0) for (const resolve of this.idleWaiters.splice(0)) resolve()
  }

  /** Whether the queue holds something flushLoop may run now. */
  private nextRunnable(): boolean {
    return this.holding
      ? this.queue.some(
          (op) =>
            op.kind === 'remote' || op.kind === 'meta' || op.kind === 'wipe-end' || refusedHeld(op),
        )
      : this.queue.length > 0
  }

  /**
   * What the queue runs next: a wipe alone (what was queued before it is
   * durable first, and what is queued after it lands in the emptied
   * document), or a batch of operations up to the next wipe. While own
   * writes are held, only remote updates and bookkeeping run.
   */
  private nextBatch():
    { wipe: PendingOp; batch?: never } | { wipe?: never; batch: PendingOp[] } | undefined {
    if (this.queue.length === 0) return undefined
    // The end of a staged wipe goes first, whatever waits: the writes it
    // held must land in the document it leaves, never in the staged one.
    const endAt = this.queue.findIndex((op) => op.kind === 'wipe-end')
    if (endAt >= 0) return { wipe: this.queue.splice(endAt, 1)[0] as PendingOp }
    if (this.holding) {
      // A full sync's staged wipe is refused at once (see refusedHeld).
      const refusedAt = this.queue.findIndex(refusedHeld)
      if (refusedAt >= 0) return { wipe: this.queue.splice(refusedAt, 1)[0] as PendingOp }
      const batch: PendingOp[] = []
      const rest: PendingOp[] = []
      for (const op of this.queue) {
        const runs = op.kind === 'remote' || op.kind === 'meta'
        if (runs && batch.length < limits.writeBatchOpsMax) batch.push(op)
        else rest.push(op)
      }
      if (batch.length === 0) return undefined
      this.queue = rest
      return { batch }
    }
    const wipeAt = this.queue.findIndex((op) => op.kind === 'wipe')
    if (wipeAt === 0) return { wipe: this.queue.shift() as PendingOp }
    const take = wipeAt < 0 ? limits.writeBatchOpsMax : Math.min(wipeAt, limits.writeBatchOpsMax)
    return { batch: this.queue.splice(0, take) }
  }

  /**
   * Rejects every queued remote update with `error` (the document they
   * were received for was replaced by a new generation: issue 13).
   */
  dropRemotes(error: Error): void {
    const dropped = this.queue.filter((op) => op.kind === 'remote')
    if (dropped.length === 0) return
    this.queue = this.queue.filter((op) => op.kind !== 'remote')
    for (const op of dropped) op.reject(error)
  }

  /** Ends a hold of own writes (see WipeOptions.holdWrites); they run now. */
  releaseWrites(): void {
    if (!this.holding) return
    this.holding = false
    if (this.queue.length > 0) this.scheduleFlush()
  }
}
