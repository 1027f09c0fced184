/**
 * The replica: one peer's Yjs document, its local-only state and its event
 * log, kept durable in a Store. It is the thin shell around `core/`: every
 * change goes through one write queue that folds concurrent calls into one
 * Yjs transaction and one atomic store batch, and a write resolves only once
 * that batch is on disk. Server and device peers add their rules on top
 * (`server-peer/`, `peers/device.ts`); networking feeds `applyRemote`.
 *
 * `Replica` is the composition the peers use; each job is a room of its own
 * under `peers/replica/` (ARCHITECTURE.md, "The replica's rooms"):
 * - `document.ts`: the Yjs doc, the roots and the user index, the reads,
 *   the own-conflict merge; no I/O, no timers. `local-state.ts`: what the
 *   peer keeps and never replicates.
 * - the journal: `write-queue.ts` (the queue, the remote batch window),
 *   `batch-runner.ts` (one transaction and one atomic store batch per
 *   batch), `update-log.ts` (load, clientID, the stored log), `compactor.ts`,
 *   `event-journal.ts`, `durable-gate.ts` (`whenDurable`).
 * - `intake.ts`: remote updates, held back until Yjs can integrate them.
 * - `fan-out.ts`: listeners, coalescing, announce timing. `readers.ts`:
 *   the views readers get (kept through a full sync's fetch).
 */
import { strict as assert } from 'node:assert'
import type * as Y from 'yjs'
import type { Clock } from '../core/clock.js'
import { MalformedMessageError, PeerClosedError } from '../core/errors.js'
import type { EventLog } from '../core/events.js'
import { Hlc, type HlcStamp } from '../core/hlc.js'
import type { UserId, WriterId } from '../core/ids.js'
import { limits } from '../core/limits.js'
import type { UpdateRanges } from '../core/update-scan.js'
import type { PolicyTable, UserLocal, UserReplica, UserView } from '../core/resolve.js'
import { ReplicaAnswers } from './replica/answers.js'
import { BatchRunner } from './replica/batch-runner.js'
import { Compactor } from './replica/compactor.js'
import { ReplicaDocument } from './replica/document.js'
import { DurableGate } from './replica/durable-gate.js'
import { EventJournal } from './replica/event-journal.js'
import { FanOut } from './replica/fan-out.js'
import { Intake, updateMeta } from './replica/intake.js'
import { LocalState } from './replica/local-state.js'
import { Readers } from './replica/readers.js'
import { StampTime } from './replica/restamp.js'
import { ReplicaStatus } from './replica/status.js'
import type {
  MetaContext,
  OpenKind,
  PendingOp,
  RemoteUpdate,
  ReplicaOptions,
  ReplicaUpdate,
  UpdateMeta,
  WipeEnd,
  WipeOptions,
  WriteContext,
} from './replica/types.js'
import { UpdateLog } from './replica/update-log.js'
import { holdForSwitch, switchGeneration, type NewGeneration } from './replica/generation-switch.js'
import { WriteQueue } from './replica/write-queue.js'

export type { NewGeneration } from './replica/generation-switch.js'
export {
  LOCAL_ORIGIN,
  REMOTE_ORIGIN,
  WipeSkippedError,
  type HeldBeforeRefetch,
  type MetaContext,
  type OpenKind,
  type ReplicaHooks,
  type ReplicaOptions,
  type ReplicaUpdate,
  type WipeOptions,
  type WriteContext,
} from './replica/types.js'

/** One peer's durable replicated state. */
export class Replica {
  private readonly status = new ReplicaStatus()
  private readonly local = new LocalState(new Hlc())
  private readonly document: ReplicaDocument
  private readonly journal: EventJournal
  private readonly log: UpdateLog
  private readonly gate: DurableGate
  private readonly queue: WriteQueue
  private readonly intake: Intake
  private readonly fanOut: FanOut
  private readonly compactor: Compactor
  private readonly runner: BatchRunner
  private readonly readers: Readers
  /** The time it stamps at, and the rewrite of its stamps that ran ahead (PROTOCOL.md, "Clocks"). */
  readonly stampTime: StampTime
  /** Its answers to other peers' step 1s: their parts, and turns for costly ones. */
  readonly answers: ReplicaAnswers

  private constructor(private readonly options: ReplicaOptions) {
    const { clock } = options
    this.document = new ReplicaDocument({
      writerId: options.writerId,
      schema: options.schema,
      hlc: this.local.hlc,
      local: this.local,
      onTransaction: (tr) => this.gate.noteTransaction(tr),
    })
    this.journal = new EventJournal(options.eventsMax ?? limits.eventsMax)
    this.log = new UpdateLog(options)
    this.gate = new DurableGate(this.document, this.status)
    this.queue = new WriteQueue(options, this.status, this.gate, {
      batch: (batch) => this.runner.flushBatch(batch),
      wipe: (op) => this.runner.flushWipe(op),
    })
    this.intake = new Intake(this.document, () => this.log.epoch)
    this.readers = new Readers(this.document)
    this.answers = new ReplicaAnswers(this.document, clock, options.answerChunkBytesMax)
    this.fanOut = new FanOut(options)
    const { status, document, log, queue } = this
    this.compactor = new Compactor({ clock, status, log, document, events: this.journal, queue })
    this.stampTime = new StampTime({
      ...{
        clock,
        writerId: options.writerId,
        hlc: this.local.hlc,
        document,
        local: this.local,
        queue,
      },
      writes: this,
    })
    this.runner = new BatchRunner({
      ...{ clock, hlc: this.local.hlc, hooks: options.hooks, status, document, local: this.local },
      stampNow: () => this.stampTime.now(),
      ...{ events: this.journal, log, gate: this.gate, queue, intake: this.intake },
      ...{ fanOut: this.fanOut, compactor: this.compactor, rollback: () => this.rollback() },
      freezeViews: () => this.readers.freeze(),
      thawViews: () => this.readers.thaw(),
    })
  }

  /** Opens (or creates) a replica from its store. */
  static async open(options: ReplicaOptions): Promise<Replica> {
    const replica = new Replica(options)
    await replica.load()
    return replica
  }

  /** The document (replaced by a wipe or a rollback: read it each time). */
  get doc(): Y.Doc {
    return this.document.doc
  }

  /** The event log. */
  get events(): EventLog {
    return this.journal.events
  }

  /** How the peer came up, for the clientID rule and for tests. */
  get openKind(): OpenKind {
    return this.log.openKind
  }

  /** The injected clock (sessions bound their links' rates with it). */
  get clock(): Clock {
    return this.options.clock
  }

  /** Updates of link `from` held back (waiting for earlier operations); none: it sent all it had. */
  heldBackFrom(from: string): number {
    return this.intake.heldBackFrom(from)
  }

  /** Forgets the updates held back for link `from`, closed (its next link sends them again). */
  dropHeldBackFrom(from: string): void {
    this.intake.dropHeldBackFrom(from)
  }

  /** This peer's writer id. */
  get writerId(): WriterId {
    return this.options.writerId
  }

  /** The Yjs clientID this peer writes with. */
  get clientId(): number {
    return this.doc.clientID
  }

  /**
   * Loads the document, local state and events from the store. On a
   * rollback the clientID stays: what it wrote past the store was never
   * durable nor sent, and choosing again would need a store write, which is
   * what just failed.
   */
  private async load(rollback = false): Promise<void> {
    const store = this.options.store
    await this.journal.loadBeside(store, this.log.loadDoc(rollback, this.doc.clientID), (doc) => {
      this.document.installDoc(doc)
      this.readers.thaw()
      this.document.invalidatePolicies()
      return this.local.load(store)
    })
    await this.local.loadClock(store)
    await this.local.loadRecords(store)
    this.stampTime.load()
  }

  /** Mints a new clientID now (a wipe, a full sync, a restore): later operations never collide with the old id's. */
  renewClientId(): Promise<void> {
    return this.log.renewClientId(this.doc)
  }

  /** A peer-local record (see WriteContext.setRecord), or undefined. */
  record(namespace: string, key: string): unknown {
    return this.local.record(namespace, key)
  }

  /** Every record of a namespace, as [key, value] pairs in key order. */
  recordsOf(namespace: string): Array<[string, unknown]> {
    return this.local.recordsOf(namespace)
  }

  /** Sets one record durably (a write of its own). */
  setRecord(namespace: string, key: string, value: unknown): Promise<void> {
    return this.writeMeta((ctx) => ctx.setRecord(namespace, key, value))
  }

  // ---------------------------------------------------------------- reads

  /** Whether the server revoked `writer` (as heard here): its envelopes refused, part unseen. */
  isRevoked(writer: string): boolean {
    return this.document.isRevoked(writer)
  }

  /** Whether the server revoked any device (as far as this peer has heard). */
  hasRevocations(): boolean {
    return this.document.hasRevocations()
  }

  /** What the replicated document holds for one user (see ReplicaDocument.replicaOf). */
  replicaOf(id: UserId): UserReplica {
    return this.document.replicaOf(id)
  }

  /** The field policies in force (from the server's meta map). */
  policies(): PolicyTable {
    return this.document.policies()
  }

  /** This peer's local-only state for a user. */
  localOf(id: UserId): UserLocal {
    return this.document.localOf(id)
  }

  /** The users this peer holds local-only state of (device-specific values, a delete mark). */
  localIds(): Set<UserId> {
    return this.local.localIds()
  }

  /** The view of one user in the document, or undefined. */
  view(id: UserId): UserView | undefined {
    return this.document.view(id)
  }

  /** What the API's readers get (`users.get`/`list`): the views, kept through a full sync's fetch. */
  get shown(): Readers {
    return this.readers
  }

  /** Every user id mentioned by replicated or local state, sorted. */
  allUserIds(): UserId[] {
    return this.document.allUserIds()
  }

  /** The views of all users in the document, ordered by id. */
  list(): UserView[] {
    return this.document.list()
  }

  /** How many users' server entries come from an import and are not yet in the document. */
  get importedCount(): number {
    return this.local.importedCount
  }

  /** The greatest HLC stamp issued or observed. */
  hlcPeek(): HlcStamp {
    return this.local.hlc.peek()
  }

  /**
   * What a peer at `stateVector` lacks of the document (see
   * ReplicaDocument.encodeDiff). Read it inside whenDurable when it is an
   * answer.
   */
  encodeDiff(stateVector: Uint8Array): Uint8Array {
    return this.document.encodeDiff(stateVector)
  }

  /** Runs `read` when memory holds only what is durable (see DurableGate.whenDurable). */
  whenDurable<T>(read: (doc: Y.Doc, durableVector: Uint8Array) => T): Promise<T> {
    return this.gate.whenDurable(read)
  }

  // ---------------------------------------------------------------- writes

  /**
   * Runs `run` inside the next write batch; resolves with its result once the
   * batch is durable. If `run` throws, only this operation fails.
   */
  write<T>(run: (ctx: WriteContext) => T): Promise<T> {
    return this.enqueue('local', run)
  }

  /**
   * A write of bookkeeping only (events, peer-local records), durable like
   * any write. It needs no Yjs transaction (a batch of them and of remote
   * updates that changed nothing runs without one), and it is not held by
   * a full sync (WipeOptions.holdWrites): it cannot build on the document.
   */
  writeMeta<T>(run: (ctx: MetaContext) => T): Promise<T> {
    return this.enqueue('meta', run)
  }

  private enqueue<T>(kind: 'local' | 'meta', run: (ctx: WriteContext) => T): Promise<T> {
    const refused = this.status.refusal()
    if (refused !== undefined) return Promise.reject(refused)
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ kind, run, resolve: resolve as (v: unknown) => void, reject })
    })
  }

  /**
   * Applies an update received from another peer; resolves once it (and any
   * adoption it caused) is durable. Malformed bytes reject with
   * `MALFORMED_MESSAGE` and change nothing.
   */
  applyRemote(update: Uint8Array, from?: string, scanned?: UpdateRanges): Promise<void> {
    const refused = this.status.refusal()
    if (refused !== undefined) return Promise.reject(refused)
    let meta: UpdateMeta
    try {
      // Decoding first means a malformed update is refused before any of it
      // is applied (Yjs can apply part of an update and then throw); the
      // same pass yields what canIntegrate needs. A caller that checked the
      // update scanned these very bytes already (`scanned`: scanUpdate's
      // answer for `update`, which nothing has changed since).
      meta = scanned ?? updateMeta(update)
    } catch (cause) {
      return Promise.reject(new MalformedMessageError('update does not decode', cause))
    }
    return new Promise<void>((resolve, reject) => {
      const remote: RemoteUpdate = { bytes: update, meta, from, epoch: this.log.epoch }
      const op: PendingOp = { kind: 'remote', remote, resolve: () => resolve(), reject }
      this.queue.push(from === undefined ? op : { ...op, from })
    })
  }

  /**
   * Listens to durable changes (unsubscribe: the function returned); with
   * `coalesce`, at most once per announce interval, merged (FanOut.onUpdate).
   */
  onUpdate(listener: (u: ReplicaUpdate) => void, options?: { coalesce?: boolean }): () => void {
    return this.fanOut.onUpdate(listener, options)
  }

  /** Listens to the document being replaced (rollback after a storage failure, wipe). */
  onReset(listener: () => void): () => void {
    return this.document.onReset(listener)
  }

  /** Resolves when every queued write is durable and the queue is idle. */
  drain(): Promise<void> {
    return this.queue.drain()
  }

  /** Holds own writes (remote updates apply) until releaseWrites or a `writesHeld` wipe's end. */
  holdWrites(): void {
    this.queue.setHolding(true)
  }

  /** Ends a hold of own writes (see WipeOptions.holdWrites); they run now. */
  releaseWrites(): void {
    this.queue.releaseWrites()
  }

  /** Empties the document (BatchRunner.flushWipe); queued like a write, resolves once durable. */
  wipe(options: WipeOptions): Promise<void> {
    // A staged wipe clears nothing in the store before its commit.
    assert(options.staged !== true || !options.local, 'a staged wipe keeps local state')
    const refused = this.status.refusal()
    if (refused !== undefined) return Promise.reject(refused)
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ kind: 'wipe', wipe: options, resolve: () => resolve(), reject })
    })
  }

  /** Makes a staged wipe durable, with peer-local `records` in its batch; releases the writes it held. */
  commitWipe(
    records: ReadonlyArray<readonly [string, string, unknown]> = [],
    carry?: (ctx: WriteContext) => void,
    options: Pick<Extract<WipeEnd, { commit: true }>, 'deletes' | 'restored'> = {},
  ): Promise<void> {
    return this.endWipe({ commit: true, records, ...options, ...(carry && { carry }) })
  }

  /** Undoes a staged wipe (the stored state is reloaded) and releases the writes it held. */
  abandonWipe(): Promise<void> {
    return this.endWipe({ commit: false })
  }

  private endWipe(end: WipeEnd): Promise<void> {
    if (this.status.closed && end.commit) return Promise.reject(new PeerClosedError())
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ kind: 'wipe-end', end, resolve: () => resolve(), reject })
    })
  }

  /** After a failed store write: rebuild memory from what is durable. */
  private async rollback(): Promise<void> {
    try {
      await this.load(true)
    } catch (error) {
      // Memory now holds changes the store does not: refuse every further
      // write until the peer is reopened, rather than serve a false state.
      this.status.broken = error
    }
  }

  /** Defers compaction until the returned function is called (Compactor.defer: a fetch's parts arriving). */
  deferCompaction(): () => void {
    return this.compactor.defer()
  }

  /**
   * Replaces the document by a new generation's base in one atomic batch; `switched`
   * runs synchronously once memory holds it. `holdForSwitch` holds the queue first
   * while a large base is prepared (replica/generation-switch.ts).
   */
  switchGeneration<T>(build: (doc: Y.Doc) => NewGeneration<T>, switched: (result: T) => void) {
    const { status, log, document, local, queue, intake, journal: events } = this
    const rollback = (): Promise<void> => this.rollback()
    const { clock } = this.options
    const parts = { clock, events, rollback, status, log, document, local, queue, intake }
    return switchGeneration(parts, build, (result) => {
      this.fanOut.dropUntold() // the old document's: sealed later, they'd pass as the new one's
      switched(result)
    })
  }

  holdForSwitch(): Promise<() => void> {
    return holdForSwitch(this.queue)
  }

  /** True while own writes are held (a staged wipe): a write called now runs when it ends. */
  get holdingWrites(): boolean {
    return this.queue.holdingWrites
  }

  /** True while a move to another generation is staged (WipeOptions.generation). */
  get movingGeneration(): boolean {
    return this.log.stagedWipe?.generation === true
  }

  /** Bytes of the stored document: its snapshot and the update log since. */
  storedDocumentBytes(): number {
    return this.log.snapshotSize + this.log.bytes
  }

  /** Compacts now (used by close and by tests). */
  compact(): Promise<void> {
    return this.compactor.compact()
  }

  /** Stops writes, makes all durable (the log; a snapshot if due), marks a clean stop, closes. */
  async close(): Promise<void> {
    if (this.status.closed) return
    // Closed first: a write made from here on is refused (PEER_CLOSED)
    // rather than slipping in between the drain and the last compaction.
    this.status.closed = true
    this.stampTime.stop()
    this.fanOut.stop()
    this.answers.bandwidth.close()
    // A batch waiting out its window starts now: closing drains it.
    this.queue.endWindow()
    // A staged wipe not committed is undone first: the writes it held then
    // land in the stored document.
    if (this.log.stagedWipe !== undefined) void this.abandonWipe()
    this.releaseWrites()
    await this.queue.drain()
    this.fanOut.cancelAnnounce()
    this.compactor.cancel()
    this.fanOut.cancelTells()
    try {
      // A broken replica is not marked clean: its clientID may have written
      // what the store never took, so the next open mints a fresh one.
      if (this.status.broken === undefined) {
        await this.compactor.compactOnClose()
        await this.log.storeBatch(this.log.closeOps(this.local.hlc.peek(), this.doc.clientID))
      }
    } finally {
      this.document.destroy()
      await this.options.store.close()
    }
  }
}
