/**
 * What is durable, for the readers that send from the document (the sync
 * sessions' answers): `whenDurable` runs a read at a moment when memory
 * holds none of this peer's own changes that are not on disk yet.
 *
 * Invariants: `inFlight` is true from the moment the write queue applies a
 * batch (or wipe) in memory until it settles; `remoteInFlight` only while a
 * batch of remote updates alone is being written, and then `batchBefore` is
 * the state vector from before that batch; `readers` is empty whenever
 * `inFlight` is false.
 */
import * as Y from 'yjs'
import { encodeStateVectorMap } from '../../core/codec.js'
import { writeVarUintAt } from '../../core/protocol.js'
import type { ReplicaDocument } from './document.js'
import type { ReplicaStatus } from './status.js'

/** The moments at which the document may be read for an answer. */
export class DurableGate {
  /** A batch (or wipe) is applied in memory and not durable yet. */
  private inFlight = false
  /**
   * The state vector before the batch being applied (its first
   * transaction's `beforeState`): what is durable while a batch of remote
   * updates is still being written (see whenDurable).
   */
  private batchBefore: Map<number, number> | undefined = undefined
  /** Readers were let in while a batch of remote updates is being written. */
  private remoteInFlight = false
  /** Readers waiting for a moment when memory holds only what is durable. */
  private durableReaders: Array<() => void> = []
  /**
   * The document's encoded state vector, kept until its next transaction
   * (every answer carries it: with 1,000 devices, each a clientID, a walk
   * of 1,000 clients per answer).
   */
  private vector: { readonly doc: Y.Doc; readonly bytes: Uint8Array } | undefined
  /** The document's clientIDs, highest first (the order Yjs writes them in). */
  private clients: { readonly doc: Y.Doc; readonly order: number[] } | undefined

  constructor(
    private readonly document: ReplicaDocument,
    private readonly status: ReplicaStatus,
  ) {}

  /** A batch (or wipe) is about to be applied in memory. */
  begin(batch: boolean): void {
    this.inFlight = true
    if (batch) this.batchBefore = undefined
  }

  /** Told of every transaction (ReplicaDocument): keeps the state before a batch. */
  noteTransaction(tr: Y.Transaction): void {
    this.vector = undefined
    if (this.inFlight && this.batchBefore === undefined) this.batchBefore = tr.beforeState
  }

  /**
   * Runs `read` at a moment when the document in memory holds none of this
   * peer's own changes that are not durable yet: at once when no batch with
   * own changes is being written, else right after it is on disk, before
   * the next one is applied. What a peer sends from its document (its
   * answer to a state exchange) must be read this way: sending its own
   * change that a crash then destroys would leave other peers holding
   * operations of a clientID that this peer, restarted under a fresh
   * clientID, never made durable, and the server refuses them back as
   * forged. Remote changes not yet durable here may be read: each is
   * durable where it came from, and its sender counts it as delivered only
   * once an answer to a later message of its own says so (a connection's
   * messages are applied, durably, in order).
   */
  whenDurable<T>(read: (doc: Y.Doc, durableVector: Uint8Array) => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const run = (): void => {
        if (this.status.broken !== undefined) {
          reject(this.status.brokenError())
          return
        }
        try {
          const doc = this.document.doc
          const before = this.remoteInFlight ? this.batchBefore : undefined
          const vector = before === undefined ? this.stateVector(doc) : encodeStateVectorMap(before)
          resolve(read(doc, vector))
        } catch (error) {
          reject(error instanceof Error ? error : new Error(String(error)))
        }
      }
      if (this.inFlight) this.durableReaders.push(run)
      else run()
    })
  }

  /**
   * `Y.encodeStateVector(doc)`, the same bytes until the document's next
   * transaction (noteTransaction); made afresh inside a transaction or its
   * cleanup, which the document hears of only at its end. Not to be
   * modified.
   */
  private stateVector(doc: Y.Doc): Uint8Array {
    if (doc._transaction !== null || doc._transactionCleanups.length > 0)
      return Y.encodeStateVector(doc)
    if (this.vector?.doc !== doc) this.vector = { doc, bytes: this.encodeVector(doc) }
    return this.vector.bytes
  }

  /**
   * The bytes of `Y.encodeStateVector(doc)`, written from the clientIDs
   * kept in order (sorted again only when the document gained one) rather
   * than through a map of every client and a sort each time, in place
   * rather than through an encoder that checks its room at every byte.
   */
  private encodeVector(doc: Y.Doc): Uint8Array {
    const { clients } = doc.store
    let order = this.clients?.doc === doc ? this.clients.order : undefined
    // A Yjs store never loses a client: as many clients are the same ones.
    if (order?.length !== clients.size) {
      order = [...clients.keys()].sort((a, b) => b - a)
      this.clients = { doc, order }
    }
    // At most 8 bytes per varUint (clientIDs and clocks are safe integers).
    const out = new Uint8Array(8 + order.length * 16)
    let at = writeVarUintAt(out, 0, order.length)
    for (const client of order) {
      const structs = clients.get(client) as Y.AbstractStruct[]
      const last = structs[structs.length - 1] as Y.AbstractStruct
      at = writeVarUintAt(out, at, client)
      at = writeVarUintAt(out, at, last.id.clock + last.length)
    }
    return out.slice(0, at)
  }

  /**
   * Memory holds none of this peer's own changes that are not durable:
   * runs the waiting readers (see whenDurable). `remoteOnly`: a batch of
   * remote updates is still being written (readers get the state vector
   * from before it).
   */
  settle(remoteOnly = false): void {
    this.inFlight = false
    this.remoteInFlight = remoteOnly
    for (const run of this.durableReaders.splice(0)) run()
  }
}
