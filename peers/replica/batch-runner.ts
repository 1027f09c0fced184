/**
 * Runs what the write queue hands over: a batch of operations becomes at
 * most one Yjs transaction of remote updates (the intake) and one of own
 * writes, whose updates, local-state changes and events go to the store in
 * one atomic batch; callers settle once it is durable, then listeners hear
 * of it (the fan-out). A wipe replaces the document; a staged wipe's end
 * commits or abandons it. A failed store write rejects the batch's callers
 * and reloads memory from the store (`rollback`).
 */
import * as Y from 'yjs'
import { newDoc } from '../../core/new-doc.js'
import type { Clock } from '../../core/clock.js'
import { PeerClosedError, RostersyncError } from '../../core/errors.js'
import type { Hlc } from '../../core/hlc.js'
import type { StoreOp } from '../../core/store.js'
import { keys } from '../storage-keys.js'
import { encodeValue } from '../../core/codec.js'
import { transactionUpdate } from '../../core/transaction-update.js'
import type { Compactor } from './compactor.js'
import type { ReplicaDocument } from './document.js'
import type { DurableGate } from './durable-gate.js'
import type { EventJournal } from './event-journal.js'
import type { FanOut } from './fan-out.js'
import type { Intake } from './intake.js'
import type { LocalState } from './local-state.js'
import type { ReplicaStatus } from './status.js'
import type { UpdateLog } from './update-log.js'
import { writeContext } from './write-context.js'
import type { WriteQueue } from './write-queue.js'
import {
  LOCAL_ORIGIN,
  REMOTE_ORIGIN,
  WipeSkippedError,
  type BatchCapture,
  type Outcome,
  type PendingOp,
  type ReplicaHooks,
  type ReplicaUpdate,
  type WipeEnd,
  type WipeOptions,
} from './types.js'
import { pruneDeadLocal, pruneImported, settleMarks } from './local-prune.js'

/** The rooms a batch goes through (a components object, as js-libp2p's). */
export interface BatchParts {
  readonly clock: Clock
  /** See WriteContextParts.stampNow. */
  readonly stampNow: () => number
  readonly hlc: Hlc
  readonly hooks: ReplicaHooks | undefined
  readonly status: ReplicaStatus
  readonly document: ReplicaDocument
  readonly local: LocalState
  readonly events: EventJournal
  readonly log: UpdateLog
  readonly gate: DurableGate
  readonly queue: WriteQueue
  readonly intake: Intake
  readonly fanOut: FanOut
  readonly compactor: Compactor
  /** After a failed store write: rebuild memory from what is durable. */
  readonly rollback: () => Promise<void>
  /** A staged wipe empties the document now: readers keep what it showed (Replica.shown). */
  readonly freezeViews?: () => void
  /** The staged wipe is committed: readers get the document again. */
  readonly thawViews?: () => void
}

/** Applies and stores the batches of one replica. */
export class BatchRunner {
  /**
   * The clock's state last stored (its last stamp and its wall): each goes
   * with the next batch once it differs, later or, after a rewind
   * (StampTime.restamp), earlier.
   */
  private hlcStored: number | undefined
  private wallStored = 0
  /** Whether a batch looked at all of the local-only state (applyBatch). */
  private pruned = false
  constructor(private readonly parts: BatchParts) {}

  /** Applies one batch of operations, makes it durable, then settles each. */
  async flushBatch(batch: PendingOp[]): Promise<void> {
    const { document, gate, log, events } = this.parts
    const captured: ReplicaUpdate[] = []
    const storeOps: StoreOp[] = []
    const outcomes: Outcome[] = []
    // Updates whose transaction deleted nothing (a bulk enrolment's): they
    // add no garbage a compaction would take away (see compactionDue).
    const deleteFree = new Set<Uint8Array>()
    // Each transaction's update, where Yjs would emit 'update' (see
    // core/transaction-update.ts: written from the clients it grew).
    const onTransaction = (tr: Y.Transaction): void => {
      const update = transactionUpdate(tr)
      if (update === undefined) return
      captured.push({ update, origin: tr.origin === REMOTE_ORIGIN ? 'remote' : 'local' })
      if (tr.deleteSet.clients.size === 0) deleteFree.add(update)
    }
    document.doc.on('afterTransactionCleanup', onTransaction)
    try {
      this.applyBatch(batch, storeOps, outcomes, { captured, onTransaction, deleteFree })
    } finally {
      document.doc.off('afterTransactionCleanup', onTransaction)
    }
    // Only this peer's own changes must be durable before an answer holds
    // them (see whenDurable): a batch of remote updates (and bookkeeping)
    // lets readers in now, which under heavy device traffic is nearly
    // every batch, so answers do not wait for the disk.
    if (!captured.some((item) => item.origin === 'local')) gate.settle(true)
    // A generation move keeps what it receives in memory until its commit
    // stores the new document whole (WipeOptions.generation).
    if (log.stagedWipe?.generation !== true) log.appendOps(captured, storeOps, deleteFree)
    const last = this.parts.hlc.peek()
    if (last !== this.hlcStored)
      storeOps.push({ type: 'put', key: keys.hlc, value: encodeValue(last) })
    const wall = this.parts.hlc.wall()
    if (wall !== this.wallStored)
      storeOps.push({ type: 'put', key: keys.hlcWall, value: encodeValue(wall) })
    events.writeEventChunk(storeOps)
    try {
      await log.storeBatch(storeOps)
      // Noted once stored: a batch that failed leaves it for the next.
      this.hlcStored = last
      this.wallStored = wall
    } catch (error) {
      await this.parts.rollback()
      gate.settle()
      for (const op of batch) op.reject(error)
      return
    }
    // Readers first: an answer they send holds this batch, and must go out
    // before the updates announced below, which may build on what it holds.
    gate.settle()
    batch.forEach((op, i) => {
      const outcome = outcomes[i]
      if (outcome?.ok === false) op.reject(outcome.error)
      else op.resolve(outcome?.value)
    })
    this.parts.fanOut.announce(captured, batch, this.parts.intake.appliedHeld)
    try {
      await this.parts.compactor.maybeCompact()
    } catch (error) {
      this.parts.compactor.compactionFailed(error)
    }
  }

  /**
   * Clears the replicated document (and local state when asked) in one
   * atomic batch, and starts an empty document under a fresh clientID: the
   * full sync then fetches the whole roster again, and the old clientID is
   * never written with again. A staged wipe stores only the fresh clientID
   * now; the rest waits for its commit (see WipeOptions.staged).
   */
  async flushWipe(op: PendingOp): Promise<void> {
    if (op.kind === 'wipe-end') return this.flushWipeEnd(op)
    const { document, local, log, events, gate } = this.parts
    const options = op.wipe as WipeOptions
    const old = document.doc
    if (options.onlyIf !== undefined && !options.onlyIf(old)) {
      op.reject(new WipeSkippedError())
      return
    }
    const staged = options.staged === true || options.generation === true
    const heldElsewhere = this.parts.queue.holdingWrites && options.writesHeld !== true
    if (staged && (this.parts.log.stagedWipe !== undefined || heldElsewhere)) {
      // One staged document at a time, and none while own writes are held:
      // the first must end first (the write queue hands a full sync's
      // staged wipe over while it holds, to be refused here).
      op.reject(new WipeSkippedError())
      return
    }
    if (staged && this.parts.status.closed) {
      // Nothing would end it: closing undoes a staged wipe only if it began.
      op.reject(new PeerClosedError())
      return
    }
    const doc = newDoc()
    const ops: StoreOp[] = []
    doc.clientID = log.freshClientId(old, ops)
    ops.push({ type: 'put', key: keys.clientId, value: encodeValue(doc.clientID) })
    if (!staged) this.wipeOps(ops, log.nextSeq, options.deletes === true || options.local)
    if (options.local) local.localFieldsOps(ops)
    if (options.event !== undefined) {
      events.append(options.event, this.parts.clock.now())
    }
    const records =
      typeof options.records === 'function' ? options.records(old) : (options.records ?? [])
    local.recordOps(ops, records)
    events.writeEventChunk(ops)
    try {
      await log.storeBatch(ops)
    } catch (error) {
      await this.parts.rollback()
      gate.settle()
      op.reject(error)
      return
    }
    if (staged) {
      log.stage(options.deletes === true, options.generation === true)
    } else {
      log.restartAt(log.nextSeq)
      if (options.deletes === true || options.local) local.clearDeleted()
      local.clearImported()
    }
    local.setRecords(records)
    this.parts.intake.clear()
    if (options.local) local.clearLocalFields()
    // Readers keep the roster as it was until the fetched one replaces it
    // (Replica.shown): the store still holds it, and a terminal asked for
    // a user meanwhile must not find the roster empty.
    if (staged) this.parts.freezeViews?.()
    document.installDoc(doc)
    if (options.holdWrites === true || staged) this.parts.queue.setHolding(true)
    gate.settle()
    op.resolve(undefined)
  }

  /**
   * The store ops that replace the stored document by the log from
   * `fromSeq` on (an empty snapshot, the log before it deleted), and clear
   * the deletes when asked.
   */
  private wipeOps(ops: StoreOp[], fromSeq: number, deletes: boolean): void {
    this.parts.log.wipeOps(ops, fromSeq)
    this.parts.local.wipeOps(ops, deletes)
  }

  /**
   * Ends a staged wipe and the hold of own writes. A commit stores, in one
   * batch, the emptied document (the log since the wipe is all it holds),
   * the cleared deletes and the caller's records; it rejects with
   * `WipeSkippedError` when no staged wipe is pending (a storage failure
   * reloaded the stored state meanwhile). An abandon reloads the stored
   * state: the document from before the wipe, plus what arrived since.
   */
  private async flushWipeEnd(op: PendingOp): Promise<void> {
    const { local, log } = this.parts
    const end = op.end as WipeEnd
    const staged = log.stagedWipe
    this.parts.queue.setHolding(false)
    if (staged === undefined) {
      if (end.commit) op.reject(new WipeSkippedError())
      else op.resolve(undefined)
      return
    }
    if (!end.commit) {
      await this.parts.rollback()
      op.resolve(undefined)
      return
    }
    const ops: StoreOp[] = []
    let snapshotBytes = 0
    const deletes = staged.deletes || end.deletes === true
    if (staged.generation) {
      // The carried own writes and the whole new document, in this batch.
      const ctx = writeContext(this.parts, ops)
      const carry = end.carry
      if (carry !== undefined) this.parts.document.doc.transact(() => carry(ctx), LOCAL_ORIGIN)
      if (!deletes && end.restored !== undefined)
        settleMarks(this.parts.document.doc, local, ctx, end.restored)
      const snapshot = Y.encodeStateAsUpdate(this.parts.document.doc)
      snapshotBytes = snapshot.byteLength
      log.replaceOps(ops, snapshot)
      local.wipeOps(ops, deletes)
    } else {
      this.wipeOps(ops, staged.fromSeq, deletes)
    }
    local.recordOps(ops, end.records)
    // Events the carry logged (the move's) go in this batch too.
    this.parts.events.writeEventChunk(ops)
    try {
      await log.storeBatch(ops)
    } catch (error) {
      await this.parts.rollback()
      op.reject(error)
      return
    }
    log.commitStaged()
    this.parts.thawViews?.()
    if (staged.generation) log.restartAt(log.nextSeq, 0, snapshotBytes)
    if (deletes) local.clearDeleted()
    local.clearImported()
    local.setRecords(end.records)
    op.resolve(undefined)
  }

  /** Runs the batch's operations against the document and local state. */
  private applyBatch(
    batch: PendingOp[],
    storeOps: StoreOp[],
    outcomes: Outcome[],
    capture: BatchCapture,
  ): void {
    const { document } = this.parts
    const ctx = writeContext(this.parts, storeOps)
    document.beginBatch()
    this.parts.intake.applyRemotes(batch, outcomes, capture, ctx)
    const remoteTouched = document.touchedUsers
    const policiesChanged = document.policiesChanged
    // Local-only state the document made dead goes (local-prune.ts): the
    // first batch looks at all of it (kept before this was done), later
    // ones at the users remote changes touched.
    const { local } = this.parts
    pruneDeadLocal(document.doc, local, this.pruned ? remoteTouched : local.localIds(), ctx)
    this.pruned = true
    if (policiesChanged)
      for (const entry of document.policies().values()) this.parts.hlc.observe(entry.t)
    const runWrites = (): void =>
      batch.forEach((op, i) => {
        if ((op.kind !== 'local' && op.kind !== 'meta') || op.run === undefined) return
        try {
          outcomes[i] = { ok: true, value: op.run(ctx) }
        } catch (error) {
          if (!(error instanceof RostersyncError)) throw error
          outcomes[i] = { ok: false, error }
        }
      })
    // A Yjs transaction costs a state vector on each side of it: a batch of
    // bookkeeping and of remote updates that call for no write of this
    // peer's (nothing touched, or nothing its hooks would write) needs none.
    const hasLocal = batch.some((op) => op.kind === 'local')
    const { hooks } = this.parts
    const ownWrites =
      remoteTouched.size > 0 &&
      (this.parts.local.importedCount > 0 ||
        (hooks?.afterRemote !== undefined &&
          hooks.writesAfterRemote?.(remoteTouched, ctx) !== false))
    if (!hasLocal && !ownWrites && !policiesChanged && !document.hasOwnConflicts) {
      runWrites()
      return
    }
    document.doc.transact(() => {
      document.mergeOwnConflicts(ctx)
      pruneImported(document.doc, this.parts.local, remoteTouched, policiesChanged, ctx)
      if (remoteTouched.size > 0 || policiesChanged) {
        this.parts.hooks?.afterRemote?.(remoteTouched, ctx, policiesChanged)
      }
      runWrites()
    }, LOCAL_ORIGIN)
  }
}
