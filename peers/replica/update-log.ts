/**
 * The replica's journal on disk: the stored document is a snapshot plus a
 * log of updates (`u/<seq>`), each batch's updates appended in the batch's
 * one atomic store write. It loads the document, chooses the Yjs clientID,
 * writes store batches, and replaces the log by a snapshot (compaction and
 * the wipes).
 *
 * Invariants: the log holds the updates `firstUpdateSeq` to
 * `nextUpdateSeq - 1`, `updateBytesSinceSnapshot` their size; while a staged
 * wipe is pending (`staged`), the log before `staged.fromSeq` is the old
 * document's and nothing may be compacted.
 */
import * as Y from 'yjs'
import { newDoc } from '../../core/new-doc.js'
import { applyUpdate } from '../../core/apply-update.js'
import { decodeValue, encodeValue } from '../../core/codec.js'
import { RostersyncError, StorageError } from '../../core/errors.js'
import type { Store, StoreOp } from '../../core/store.js'
import type { ClientIdSource } from '../identity.js'
import { keys, seqOf } from '../storage-keys.js'
import type { OpenKind, ReplicaUpdate } from './types.js'

/** What the log is built with. */
export interface UpdateLogOptions {
  readonly store: Store
  readonly randomUint32: () => number
  readonly clientIds?: ClientIdSource
  /** ReplicaOptions.freshClientIdEachOpen. */
  readonly freshClientIdEachOpen?: boolean
}

/** A staged wipe not committed yet (see WipeOptions.staged). */
export interface StagedWipe {
  /** The sequence number the new document's log starts at. */
  readonly fromSeq: number
  /** Whether the commit clears the deletes (rule 3). */
  readonly deletes: boolean
  /** Bytes of the log when it was staged. */
  readonly bytes: number
  /** A generation move: nothing received is stored until the commit's snapshot. */
  readonly generation: boolean
}

/** The snapshot of an empty document (a wipe stores it). */
const EMPTY_SNAPSHOT = Y.encodeStateAsUpdate(new Y.Doc())

/** The stored document of one replica. */
export class UpdateLog {
  openKind: OpenKind = 'new'
  private nextUpdateSeq = 1
  private firstUpdateSeq = 1
  private updateBytesSinceSnapshot = 0
  /**
   * Bytes of those updates that may delete something (all of them unless
   * known otherwise): a compaction can shrink only what they made garbage
   * of. A log of inserts alone (a bulk enrolment) is as compact as a
   * snapshot of it.
   */
  private deletingBytesSinceSnapshot = 0
  /** Bytes of the stored snapshot (what a compaction costs grows with it). */
  private snapshotBytes = 0
  /**
   * A staged wipe not committed yet (WipeOptions.staged): the update
   * sequence number its document's log starts at (what is stored before it
   * is the old document), and whether the commit clears deletes.
   */
  private staged: StagedWipe | undefined
  /** See epoch. */
  private generationEpoch = 0

  constructor(private readonly options: UpdateLogOptions) {}

  /**
   * Counts the times memory's document changed generation: a move staged
   * (its document installed), one undone (the stored, old generation
   * reloaded), a switch (nextEpoch). A remote update queued under another
   * epoch was received for the other generation's document.
   */
  get epoch(): number {
    return this.generationEpoch
  }

  /** The document changes generation (a switch: see epoch). */
  nextEpoch(): void {
    this.generationEpoch++
  }

  /** The staged wipe not committed yet, if one is (see WipeOptions.staged). */
  get stagedWipe(): StagedWipe | undefined {
    return this.staged
  }

  /**
   * A staged wipe is durable as far as it goes: the new document's log
   * starts now (a generation move's: at its commit, as a snapshot).
   */
  stage(deletes: boolean, generation = false): void {
    this.staged = {
      fromSeq: this.nextUpdateSeq,
      deletes,
      bytes: this.updateBytesSinceSnapshot,
      generation,
    }
    if (generation) this.nextEpoch()
  }

  /**
   * A staged wipe's ops are durable: the log starts where the staged
   * document's did, and what arrived while it was staged (often the whole
   * roster) counts towards the next compaction.
   */
  commitStaged(): void {
    const staged = this.staged
    if (staged === undefined) return
    this.staged = undefined
    this.restartAt(staged.fromSeq, this.updateBytesSinceSnapshot - staged.bytes)
  }

  /** Updates in the log since the last snapshot. */
  get count(): number {
    return this.nextUpdateSeq - this.firstUpdateSeq
  }

  /** Bytes of those updates. */
  get bytes(): number {
    return this.updateBytesSinceSnapshot
  }

  /** Bytes of the updates in the log that may delete something. */
  get deletingBytes(): number {
    return this.deletingBytesSinceSnapshot
  }

  /** Bytes of the stored snapshot. */
  get snapshotSize(): number {
    return this.snapshotBytes
  }

  /** The sequence number the next stored update gets. */
  get nextSeq(): number {
    return this.nextUpdateSeq
  }

  /**
   * Loads the stored document. On a rollback the clientID stays (`clientId`,
   * the current document's): what it wrote past the store was never
   * durable nor sent, and choosing again would need a store write, which is
   * what just failed.
   */
  async loadDoc(rollback: boolean, clientId: number): Promise<Y.Doc> {
    const store = this.options.store
    // What is loaded is the stored state: a staged wipe is undone by it
    // (a move's: the old generation comes back, see epoch).
    const undone = this.staged?.generation === true
    this.staged = undefined
    const doc = newDoc()
    const snapshot = await store.get(keys.snapshot)
    if (snapshot !== undefined) applyUpdate(doc, snapshot)
    this.snapshotBytes = snapshot?.byteLength ?? 0
    this.firstUpdateSeq = 1
    this.nextUpdateSeq = 1
    this.updateBytesSinceSnapshot = 0
    let first = true
    for await (const [key, update] of store.range({ gte: keys.updatesFrom, lt: keys.updatesTo })) {
      applyUpdate(doc, update)
      const seq = seqOf(key)
      if (first) this.firstUpdateSeq = seq
      first = false
      this.nextUpdateSeq = seq + 1
      this.updateBytesSinceSnapshot += update.byteLength
    }
    // What a stored update deletes is not known without decoding it,
    // unless a clean close just said (closeOps; deleted by the open below).
    const said = rollback ? undefined : await store.get(keys.logDeletingBytes)
    const saidBytes = said === undefined ? NaN : Number(decodeValue(said))
    this.deletingBytesSinceSnapshot = Number.isFinite(saidBytes)
      ? Math.min(saidBytes, this.updateBytesSinceSnapshot)
      : this.updateBytesSinceSnapshot
    if (first) this.firstUpdateSeq = this.nextUpdateSeq = await this.nextSeqAfterSnapshot()
    if (rollback) doc.clientID = clientId
    else await this.chooseClientId(doc)
    // Last: a remote update queued while it loaded was for the staged document.
    if (undone) this.nextEpoch()
    return doc
  }

  /** Keeps update numbering increasing across compactions. */
  private async nextSeqAfterSnapshot(): Promise<number> {
    const stored = await this.options.store.get(keys.updateSeq)
    return stored === undefined ? 1 : Number(decodeValue(stored))
  }

  /**
   * Keeps the clientID across a clean restart; mints a new one after a crash
   * (or on first start), so that a clientID is never reused where some of its
   * operations may not have been made durable (yjs#415 explains why not to
   * mint one on every start; the server does: `freshClientIdEachOpen`).
   */
  private async chooseClientId(doc: Y.Doc): Promise<void> {
    const store = this.options.store
    const savedRaw = await store.get(keys.clientId)
    const cleanRaw = await store.get(keys.clean)
    const saved = savedRaw === undefined ? undefined : Number(decodeValue(savedRaw))
    const clean = cleanRaw === undefined ? undefined : Number(decodeValue(cleanRaw))
    const ops: StoreOp[] = []
    // A clientID this peer cannot sign for (one from before it had a key)
    // is not kept: its writes could never be sent.
    const provable = saved === undefined || (this.options.clientIds?.owns(saved) ?? true)
    if (saved !== undefined && clean === saved && provable) {
      doc.clientID =
        this.options.freshClientIdEachOpen === true ? this.freshClientId(doc, ops) : saved
      this.openKind = 'clean'
    } else {
      doc.clientID = this.freshClientId(doc, ops)
      this.openKind = saved === undefined ? 'new' : 'crash'
    }
    await this.storeBatch([
      ...ops,
      { type: 'put', key: keys.clientId, value: encodeValue(doc.clientID) },
      { type: 'del', key: keys.clean },
      { type: 'del', key: keys.logDeletingBytes },
    ])
  }

  /**
   * A clientID no one has written under in `doc`; the ops that keep what
   * proves it this peer's (its nonce) join `ops`, stored in the same batch
   * as the clientID itself.
   */
  freshClientId(doc: Y.Doc, ops: StoreOp[]): number {
    const used = Y.encodeStateVector(doc)
    const known = Y.decodeStateVector(used)
    for (let attempt = 0; attempt < 100; attempt++) {
      const minted = this.options.clientIds?.mint()
      const id = minted?.clientId ?? this.options.randomUint32() >>> 0
      if (id !== 0 && !known.has(id) && id !== doc.clientID) {
        if (minted !== undefined) ops.push(...minted.ops)
        return id
      }
    }
    throw new Error('could not mint a fresh Yjs clientID in 100 attempts')
  }

  /**
   * Mints a new clientID for `doc` now (after a wipe, a full sync or a
   * detected restore), so that operations made from here on never collide
   * with ones made under the old id.
   */
  async renewClientId(doc: Y.Doc): Promise<void> {
    const ops: StoreOp[] = []
    doc.clientID = this.freshClientId(doc, ops)
    await this.storeBatch([
      ...ops,
      { type: 'put', key: keys.clientId, value: encodeValue(doc.clientID) },
    ])
  }

  /**
   * Appends a batch's updates (and nothing else) to `storeOps`; those in
   * `deleteFree` are known to delete nothing.
   */
  appendOps(
    captured: readonly ReplicaUpdate[],
    storeOps: StoreOp[],
    deleteFree?: ReadonlySet<Uint8Array>,
  ): void {
    for (const { update } of captured) {
      storeOps.push({ type: 'put', key: keys.update(this.nextUpdateSeq++), value: update })
      this.updateBytesSinceSnapshot += update.byteLength
      if (deleteFree?.has(update) !== true) this.deletingBytesSinceSnapshot += update.byteLength
    }
  }

  /** Writes one atomic batch (`sync: true`); a failure is a `StorageError`. */
  async storeBatch(ops: StoreOp[]): Promise<void> {
    if (ops.length === 0) return
    try {
      await this.options.store.batch(ops)
    } catch (error) {
      throw error instanceof RostersyncError
        ? error
        : new StorageError(
            `store write failed: ${error instanceof Error ? error.message : String(error)}`,
            error,
          )
    }
  }

  /**
   * The store ops that replace the stored document by the log from
   * `fromSeq` on (an empty snapshot, the log before it deleted).
   */
  wipeOps(ops: StoreOp[], fromSeq: number): void {
    ops.push(
      { type: 'put', key: keys.snapshot, value: EMPTY_SNAPSHOT },
      { type: 'put', key: keys.updateSeq, value: encodeValue(this.nextUpdateSeq) },
    )
    for (let seq = this.firstUpdateSeq; seq < fromSeq; seq++) {
      ops.push({ type: 'del', key: keys.update(seq) })
    }
  }

  /**
   * The log starts at `fromSeq` from now on (a wipe's ops are durable);
   * `keptBytes` of it are already stored (a staged wipe's: what arrived
   * while it was staged, often the whole roster, counts towards the next
   * compaction).
   */
  restartAt(fromSeq: number, keptBytes = 0, snapshotBytes = EMPTY_SNAPSHOT.byteLength): void {
    this.firstUpdateSeq = fromSeq
    this.updateBytesSinceSnapshot = keptBytes
    this.deletingBytesSinceSnapshot = keptBytes
    this.snapshotBytes = snapshotBytes
  }

  /**
   * The store ops that replace the whole stored document by `snapshot`
   * (a new generation, issue 13): the snapshot, and every update of the
   * log deleted. Once they are durable, `restartAt(nextSeq, 0, snapshot
   * size)`.
   */
  replaceOps(ops: StoreOp[], snapshot: Uint8Array): void {
    ops.push(
      { type: 'put', key: keys.snapshot, value: snapshot },
      { type: 'put', key: keys.updateSeq, value: encodeValue(this.nextUpdateSeq) },
    )
    for (let seq = this.firstUpdateSeq; seq < this.nextUpdateSeq; seq++) {
      ops.push({ type: 'del', key: keys.update(seq) })
    }
  }

  /** Folds the update log into one snapshot of `doc`, in one atomic batch. */
  async compactLog(doc: Y.Doc): Promise<void> {
    // The document in memory is a staged wipe's: its snapshot would make
    // the wipe durable before the roster is back.
    if (this.staged !== undefined) return
    const snapshot = Y.encodeStateAsUpdate(doc)
    const ops: StoreOp[] = [
      { type: 'put', key: keys.snapshot, value: snapshot },
      { type: 'put', key: keys.updateSeq, value: encodeValue(this.nextUpdateSeq) },
    ]
    for (let seq = this.firstUpdateSeq; seq < this.nextUpdateSeq; seq++) {
      ops.push({ type: 'del', key: keys.update(seq) })
    }
    await this.storeBatch(ops)
    this.firstUpdateSeq = this.nextUpdateSeq
    this.updateBytesSinceSnapshot = 0
    this.deletingBytesSinceSnapshot = 0
    this.snapshotBytes = snapshot.byteLength
  }

  /**
   * Marks the shutdown clean (the clientID is kept) with the HLC's stamp,
   * and how much of the log may delete something (the next open reads it).
   */
  closeOps(hlc: number, clientId: number): StoreOp[] {
    return [
      { type: 'put', key: keys.hlc, value: encodeValue(hlc) },
      { type: 'put', key: keys.clean, value: encodeValue(clientId) },
      {
        type: 'put',
        key: keys.logDeletingBytes,
        value: encodeValue(this.deletingBytesSinceSnapshot),
      },
    ]
  }
}
