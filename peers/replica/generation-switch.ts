/**
 * The switch of a replica to a new generation of its document (issue 13,
 * history compaction; the server's `compactHistory`): the document is
 * replaced by the generation's base, and the stored one with it, in ONE
 * atomic store batch — the new snapshot, the old log deleted, the
 * caller's records (the generation) and its event. It holds the write
 * queue as a compaction does (nothing is applied, nor waiting to be
 * durable, while it runs; writes queued meanwhile land in the new
 * document), so it is serialised with every write.
 *
 * Invariants: a crash at any point leaves the store holding the old
 * document (the batch not written) or the new one with its records (the
 * batch written); memory changes only after the batch is durable; remote
 * updates queued for the old document are refused (GENERATION_CHANGED),
 * never applied to the new one.
 */
import * as Y from 'yjs'
import { newDoc } from '../../core/new-doc.js'
import { applyUpdate } from '../../core/apply-update.js'
import type { Clock } from '../../core/clock.js'
import { GenerationChangedError } from '../../core/errors.js'
import type { NewEvent } from '../../core/events.js'
import type { StoreOp } from '../../core/store.js'
import { encodeValue } from '../../core/codec.js'
import { keys } from '../storage-keys.js'
import type { ReplicaDocument } from './document.js'
import type { EventJournal } from './event-journal.js'
import type { Intake } from './intake.js'
import type { LocalState } from './local-state.js'
import type { ReplicaStatus } from './status.js'
import type { UpdateLog } from './update-log.js'
import type { WriteQueue } from './write-queue.js'

/** What a new generation is made of (built from the old document). */
export interface NewGeneration<T> {
  /** The new document's whole state: the generation's base (core/generation.ts). */
  readonly snapshot: Uint8Array
  /**
   * The new document itself when the caller built it (in chunks, under
   * `holdForSwitch`), holding exactly `snapshot`; otherwise it is made
   * from `snapshot` here.
   */
  readonly doc?: Y.Doc
  /** Peer-local records stored in the same batch (the generation record). */
  readonly records: ReadonlyArray<readonly [string, string, unknown]>
  /** Logged in the same batch. */
  readonly event: NewEvent
  /** Handed back to the caller once the switch is durable. */
  readonly result: T
}

/** The rooms a switch goes through. */
export interface GenerationSwitchParts {
  readonly clock: Clock
  readonly status: ReplicaStatus
  readonly log: UpdateLog
  readonly document: ReplicaDocument
  readonly local: LocalState
  readonly events: EventJournal
  readonly queue: WriteQueue
  readonly intake: Intake
  /** After a failed store write: rebuild memory from what is durable. */
  readonly rollback: () => Promise<void>
}

/** Write queues held by a switch being prepared (holdForSwitch). */
const preparing = new WeakSet<WriteQueue>()

/**
 * Holds the write queue for a switch the caller prepares over many turns
 * of the event loop (the server builds a large base in chunks, and merges
 * it off the loop): from the moment it resolves, nothing is applied to the
 * document until the returned release, so what is built from it stays
 * whole; reads and step 1 answers go on from it meanwhile, and writes wait
 * (they land in the new document). A `switchGeneration` called while it
 * is held runs in that hold.
 */
export async function holdForSwitch(queue: WriteQueue): Promise<() => void> {
  // Once the batch running now ends: writes coming back to back wait (a
  // wait for an idle queue never ended under them).
  await queue.hold()
  preparing.add(queue)
  return () => {
    if (!preparing.delete(queue)) return
    queue.endHold()
  }
}

/**
 * Replaces the document by `build(old document)`'s snapshot, durably and
 * at once. `switched` runs synchronously right after memory holds the new
 * document, before any other batch runs (the server closes its links
 * there, so nothing of the old generation reaches the new one).
 */
export async function switchGeneration<T>(
  parts: GenerationSwitchParts,
  build: (doc: Y.Doc) => NewGeneration<T>,
  switched: (result: T) => void,
): Promise<T> {
  const { queue, log, document, status } = parts
  // Held already by a preparation (holdForSwitch), which ends the hold.
  const prepared = preparing.has(queue)
  // Else held here, once the running batch ends (WriteQueue.hold).
  if (!prepared) await queue.hold()
  try {
    const refused = status.refusal()
    if (refused !== undefined) throw refused
    if (log.stagedWipe !== undefined)
      throw new GenerationChangedError('a full sync is staged: no generation switch now')
    const old = document.doc
    const next = build(old)
    let doc = next.doc
    if (doc === undefined) {
      doc = newDoc()
      applyUpdate(doc, next.snapshot)
    }
    const ops: StoreOp[] = []
    // A clientID neither document knows: the new one's writes must never
    // meet an old operation under the same id.
    let clientId = log.freshClientId(doc, ops)
    const oldClients = Y.decodeStateVector(Y.encodeStateVector(old))
    for (let attempt = 0; oldClients.has(clientId) && attempt < 100; attempt++) {
      ops.length = 0
      clientId = log.freshClientId(doc, ops)
    }
    doc.clientID = clientId
    ops.push({ type: 'put', key: keys.clientId, value: encodeValue(clientId) })
    // The base is the new document's whole state already: stored as it is
    // (encoding the document again would cost as much as building it).
    const snapshot = next.snapshot
    log.replaceOps(ops, snapshot)
    parts.local.recordOps(ops, next.records)
    parts.events.append(next.event, parts.clock.now())
    parts.events.writeEventChunk(ops)
    try {
      await log.storeBatch(ops)
    } catch (error) {
      doc.destroy()
      // The event appended above is dropped with the rest: memory is
      // rebuilt from the store, which holds the old generation.
      await parts.rollback()
      throw error
    }
    log.restartAt(log.nextSeq, 0, snapshot.byteLength)
    log.nextEpoch()
    parts.local.setRecords(next.records)
    parts.intake.clear()
    document.installDoc(doc)
    document.invalidatePolicies()
    queue.dropRemotes(
      new GenerationChangedError('received for the generation this peer has just left'),
    )
    switched(next.result)
    return next.result
  } finally {
    if (!prepared) queue.endHold()
  }
}
