/**
 * When the replica's update log is folded into a snapshot: at once when it
 * is far too long, otherwise once the write queue has been idle for
 * `compactionIdleMs` (compaction encodes the whole document, a pause no
 * answer should wait behind). It holds the queue while it runs, so no batch
 * is applied, and not yet durable, while it encodes. Timers only through
 * the injected clock.
 */
import type { Clock } from '../../core/clock.js'
import { RostersyncError } from '../../core/errors.js'
import { limits } from '../../core/limits.js'
import type { ReplicaDocument } from './document.js'
import type { EventJournal } from './event-journal.js'
import type { ReplicaStatus } from './status.js'
import type { UpdateLog } from './update-log.js'
import type { WriteQueue } from './write-queue.js'

/**
 * Whether a log of `count` updates and `bytes` bytes over a snapshot of
 * `snapshotBytes` is compacted `now`, once the queue is `idle`, or not yet
 * (`no`). A compaction encodes the whole document, so past the fixed
 * bounds it waits for a log in proportion to the snapshot: its cost per
 * byte written stays bounded however large the roster (issue 13), and a
 * few edits to a large roster do not pause the queue for all of it. Only
 * `deletingBytes` of the log (updates that may delete something) count
 * towards those bounds: a log of inserts alone holds no garbage, and is
 * compacted at once only past `updateBytesWithoutDeletesMax`. Likewise a
 * long log of small updates waits until it is worth an encode (or
 * `updatesBeforeCompactionCeiling`).
 */
export function compactionDue(
  count: number,
  bytes: number,
  snapshotBytes: number,
  deletingBytes: number = bytes,
): 'now' | 'idle' | 'no' {
  if (count === 0) return 'no'
  const proportional = snapshotBytes * limits.updateLogToSnapshotRatioMax
  const worthAnEncode = bytes * limits.updateLogToSnapshotRatioIdleMin >= snapshotBytes
  if (
    (count >= limits.updatesBeforeCompactionHardMax && worthAnEncode) ||
    count >= limits.updatesBeforeCompactionCeiling ||
    deletingBytes >= Math.max(limits.updateBytesBeforeCompactionMax, proportional) ||
    bytes >= Math.max(limits.updateBytesWithoutDeletesMax, proportional)
  )
    return 'now'
  return count >= limits.updatesBeforeCompactionMax && worthAnEncode ? 'idle' : 'no'
}

/** What the compactor works with. */
export interface CompactorParts {
  readonly clock: Clock
  readonly status: ReplicaStatus
  readonly log: UpdateLog
  readonly document: ReplicaDocument
  readonly events: EventJournal
  readonly queue: WriteQueue
}

/** The compaction of one replica's update log. */
export class Compactor {
  /** When the last batch was applied (clock ms), and the idle compaction's timer. */
  private lastBatchAt = 0
  private compactTimer: unknown = undefined
  /** Holders of deferCompaction not released yet. */
  private deferrals = 0

  constructor(private readonly parts: CompactorParts) {}

  /**
   * After a batch: compacts at once when the log is far too long (see
   * limits), and otherwise, when it is due, once the queue has been idle
   * for `compactionIdleMs` (compactWhenIdle).
   */
  async maybeCompact(force = false): Promise<void> {
    const { log, clock } = this.parts
    const count = log.count
    // A broken replica's memory is not what the store holds: never snapshot it.
    if (count === 0 || this.parts.status.broken !== undefined) return
    const due = compactionDue(count, log.bytes, log.snapshotSize, log.deletingBytes)
    const deferred = this.deferrals > 0 && log.bytes < limits.updateBytesWhileFetchingMax
    if (force || (due === 'now' && !deferred)) {
      await log.compactLog(this.parts.document.doc)
      return
    }
    this.lastBatchAt = clock.now()
    if (due !== 'no' && !deferred && this.compactTimer === undefined) {
      this.compactTimer = clock.setTimeout(() => this.compactWhenIdle(), limits.compactionIdleMs)
    }
  }

  /**
   * Defers compactions until the returned function is called (a device
   * waiting for its server's answer: see `limits.updateBytesWhileFetchingMax`);
   * then one runs once the queue is idle, if due.
   */
  defer(): () => void {
    this.deferrals++
    let released = false
    return () => {
      if (released) return
      released = true
      this.deferrals--
      const { log, clock } = this.parts
      if (this.deferrals > 0 || this.compactTimer !== undefined || this.parts.status.closed) return
      if (compactionDue(log.count, log.bytes, log.snapshotSize, log.deletingBytes) === 'no') return
      this.lastBatchAt = clock.now()
      this.compactTimer = clock.setTimeout(() => this.compactWhenIdle(), limits.compactionIdleMs)
    }
  }

  /**
   * The idle compaction's timer: compacts if nothing was written for
   * `compactionIdleMs` and the queue is idle, else looks again when that
   * much time has passed since the last batch. It holds the queue while it
   * runs, so no batch is applied (and not yet durable) while it encodes.
   */
  private compactWhenIdle(): void {
    const { log, clock, queue } = this.parts
    this.compactTimer = undefined
    if (this.parts.status.closed || this.parts.status.broken !== undefined) return
    if (log.count === 0) return
    // Deferred since it was set: the release sets it again.
    if (this.deferrals > 0 && log.bytes < limits.updateBytesWhileFetchingMax) return
    const wait = this.lastBatchAt + limits.compactionIdleMs - clock.now()
    if (wait > 0 || !queue.tryHold()) {
      this.compactTimer = clock.setTimeout(
        () => this.compactWhenIdle(),
        wait > 0 ? wait : limits.compactionIdleMs,
      )
      return
    }
    log
      .compactLog(this.parts.document.doc)
      .catch((error: unknown) => this.compactionFailed(error))
      .finally(() => queue.endHold())
  }

  /**
   * A failed compaction: the writes are durable in the update log already;
   * compaction only shortens it and is tried again later. The failure is
   * recorded in the event log, stored with the next batch.
   */
  compactionFailed(error: unknown): void {
    const code = error instanceof RostersyncError ? error.code : 'STORAGE_FAILED'
    const message = error instanceof Error ? error.message : String(error)
    const at = this.parts.clock.now()
    this.parts.events.append({ type: 'compaction-failed', code, message }, at)
  }

  /** Compacts now (used by close and by tests). */
  async compact(): Promise<void> {
    const queue = this.parts.queue
    // Holds the queue while it runs, as the idle compaction does: the check
    // and the hold are in one synchronous step, so no batch slips in.
    while (!queue.idle || !queue.tryHold()) await queue.drain()
    try {
      await this.maybeCompact(true)
    } finally {
      queue.endHold()
    }
  }

  /**
   * Closing: compacts only a log that is due at once (one a deferral held
   * back). Every write is durable in the log already; folding it into a
   * snapshot on every close encoded the whole document (7 to 48 s at 1M
   * users, issue 13), and the next open reads the log as it is. A log due
   * only when idle is compacted after the next write once the queue idles.
   */
  async compactOnClose(): Promise<void> {
    const { log } = this.parts
    if (log.count === 0 || this.parts.status.broken !== undefined) return
    if (compactionDue(log.count, log.bytes, log.snapshotSize, log.deletingBytes) !== 'now') return
    await log.compactLog(this.parts.document.doc)
  }

  /** Cancels the idle compaction's timer (closing). */
  cancel(): void {
    this.parts.clock.clearTimeout(this.compactTimer)
    this.compactTimer = undefined
  }
}
