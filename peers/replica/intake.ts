/**
 * The replica's intake of remote updates. The link checked each update
 * (`core/authorize.ts`, and the signature on a signed link) and hands over
 * its bytes with the scan it made; the intake decodes what it was not given,
 * applies the updates Yjs can integrate whole (several in one transaction),
 * and holds back the others until their clients' earlier operations arrive
 * (`HeldBackUpdates`, bounded in all and per link).
 *
 * Invariant: every held update is one `canIntegrate` refused, and none is
 * integrated without going through `applyHeld` (so the batch that did is
 * told to listeners without one sender).
 */
import * as Y from 'yjs'
import { applyUpdate } from '../../core/apply-update.js'
import { GenerationChangedError, MalformedMessageError } from '../../core/errors.js'
import { grownClients } from '../../core/grown-clients.js'
import { scanUpdate } from '../../core/update-scan.js'
import { HeldBackUpdates } from '../held-back.js'
import type { ReplicaDocument } from './document.js'
import {
  REMOTE_ORIGIN,
  type BatchCapture,
  type Outcome,
  type PendingOp,
  type RemoteUpdate,
  type UpdateMeta,
  type WriteContext,
} from './types.js'

/** Remote updates on their way into the document. */
export class Intake {
  /** Remote updates waiting for earlier operations of their clients (see canIntegrate). */
  private readonly heldBack = new HeldBackUpdates<RemoteUpdate>()
  /** The batch being applied integrated held-back updates (their senders are not its ops'). */
  private heldApplied = false
  /** The generation epoch the held-back updates were received under. */
  private heldEpoch: number
  /** The last epoch whose refused updates were logged (once per epoch). */
  private loggedEpoch = -1

  /**
   * `epoch`: the document's generation epoch now (UpdateLog.epoch); a
   * remote update queued under another is refused when it comes to apply.
   */
  constructor(
    private readonly document: ReplicaDocument,
    private readonly epoch: () => number = () => 0,
  ) {
    this.heldEpoch = epoch()
  }

  private get doc(): Y.Doc {
    return this.document.doc
  }

  /** Whether the batch being applied integrated held-back updates. */
  get appliedHeld(): boolean {
    return this.heldApplied
  }

  /** How many updates from link `from` are held back (see Replica.heldBackFrom). */
  heldBackFrom(from: string): number {
    return this.heldBack.countFrom(from)
  }

  /** Forgets the held-back updates of link `from`, gone (HeldBackUpdates.dropFrom). */
  dropHeldBackFrom(from: string): void {
    this.heldBack.dropFrom(from)
  }

  /** Forgets every held-back update (a wipe: they belong to the old document). */
  clear(): void {
    this.heldBack.takeAll()
  }

  /**
   * Applies a batch's remote updates, then the held-back ones that became
   * ready; each remote op's outcome goes to `outcomes`.
   */
  applyRemotes(
    batch: PendingOp[],
    outcomes: Outcome[],
    capture: BatchCapture,
    ctx: WriteContext,
  ): void {
    this.heldApplied = false
    this.refuseStale(batch, outcomes, ctx)
    // Several remote updates apply in one Yjs transaction: a transaction
    // costs two state vectors and an encoded update of its own, which under
    // heavy traffic (hundreds of small edits per batch) was most of the
    // work, and the batch then stores one update instead of one each. A
    // batch of one keeps applyReceived's path (a full sync's large update is
    // stored as it came).
    const remotes = batch.reduce(
      (n, op, i) => (op.kind === 'remote' && outcomes[i] === undefined ? n + 1 : n),
      0,
    )
    const applyRemotes = (apply: (remote: RemoteUpdate) => void): void =>
      batch.forEach((op, i) => {
        if (op.kind !== 'remote' || op.remote === undefined || outcomes[i] !== undefined) return
        // A duplicate (a message delivered twice, an envelope heard from the
        // server and from a LAN neighbour, a step 2 that only repeats the
        // delete set) changes nothing: Yjs would decode it whole to find so.
        if (this.bringsNothing(op.remote.meta)) {
          outcomes[i] = { ok: true, value: undefined }
          return
        }
        if (!this.canIntegrate(op.remote.meta)) {
          const refused = this.heldBack.add(op.remote)
          outcomes[i] =
            refused === undefined ? { ok: true, value: undefined } : { ok: false, error: refused }
          return
        }
        try {
          apply(op.remote)
          outcomes[i] = { ok: true, value: undefined }
        } catch (error) {
          outcomes[i] = {
            ok: false,
            error: new MalformedMessageError('update failed to apply', error),
          }
        }
      })
    if (remotes > 1) {
      this.doc.transact(() => {
        applyRemotes((remote) => applyUpdate(this.doc, remote.bytes, REMOTE_ORIGIN))
      }, REMOTE_ORIGIN)
    } else if (remotes === 1) {
      applyRemotes((remote) => this.applyReceived(remote, capture))
    }
    this.integrateHeldBack(ctx)
  }

  /**
   * Refuses (GENERATION_CHANGED) the batch's remote updates queued for a
   * document of another generation than memory's: queued before a move
   * staged its document (LAN updates behind the staging wipe), before one
   * was undone, or before a switch. Applied, they would mix the two
   * generations (the old one's items in the new document, or the other way
   * round). Logged once per epoch; the updates held back for the other
   * document are forgotten.
   */
  private refuseStale(batch: PendingOp[], outcomes: Outcome[], ctx: WriteContext): void {
    const epoch = this.epoch()
    if (this.heldEpoch !== epoch) {
      this.heldBack.takeAll()
      this.heldEpoch = epoch
    }
    let refused = 0
    batch.forEach((op, i) => {
      const queuedAt = op.kind === 'remote' ? op.remote?.epoch : undefined
      if (queuedAt === undefined || queuedAt === epoch) return
      const message = 'received for the document of another generation than this peer is on now'
      outcomes[i] = { ok: false, error: new GenerationChangedError(message) }
      refused++
    })
    if (refused === 0 || this.loggedEpoch === epoch) return
    this.loggedEpoch = epoch
    ctx.event({
      type: 'write-refused',
      code: 'GENERATION_CHANGED',
      message: `${refused} remote update(s) queued for the generation this peer left were dropped (logged once per change of generation)`,
    })
  }

  /**
   * Applies a received update that canIntegrate admitted. When it brings
   * only what this document lacks (see bringsOnlyNew), the received bytes
   * are what the batch stores and tells listeners, instead of Yjs encoding
   * the same operations again (for a full sync of 100,000 users, half a
   * second): the batch's capture is off while Yjs applies it, and
   * its transactions are watched instead. They are stored as received only
   * when the update was applied whole, as the one transaction, and changed
   * something (a no-op update must not be stored or relayed: peers that
   * relay what they are told would pass it round forever). Otherwise
   * (observers writing, pending structs, a throw part-way) what changed
   * since the state before is stored, as the capture would have.
   */
  private applyReceived(remote: RemoteUpdate, capture: BatchCapture): void {
    const doc = this.doc
    if (!this.bringsOnlyNew(remote.meta)) {
      applyUpdate(doc, remote.bytes, REMOTE_ORIGIN)
      return
    }
    const transactions: Y.Transaction[] = []
    const watch = (tr: Y.Transaction): void => void transactions.push(tr)
    let whole = false
    doc.off('afterTransactionCleanup', capture.onTransaction)
    doc.on('afterTransactionCleanup', watch)
    try {
      applyUpdate(doc, remote.bytes, REMOTE_ORIGIN)
      whole =
        transactions.length === 1 &&
        doc.store.pendingStructs === null &&
        doc.store.pendingDs === null
    } finally {
      doc.off('afterTransactionCleanup', watch)
      doc.on('afterTransactionCleanup', capture.onTransaction)
      if (transactions.some(changedDocument)) {
        const remoteOnly = transactions.every((tr) => tr.origin === REMOTE_ORIGIN)
        const update = whole
          ? remote.bytes
          : // The state before: the first transaction's (Yjs takes it as
            // the transaction opens; encoding the document's own state
            // vector up front cost a walk of every clientID per update).
            Y.encodeStateAsUpdate(
              doc,
              Y.encodeStateVector((transactions[0] as Y.Transaction).beforeState),
            )
        capture.captured.push({ update, origin: whole || remoteOnly ? 'remote' : 'local' })
        // As the capture marks them: a full sync's parts add no garbage, and
        // counted as deleting they made a fresh device compact its log
        // (encode the whole roster) again and again while the parts came in.
        // Not a rebuilt update: encodeStateAsUpdate writes the document's
        // whole delete set into it.
        if (whole && transactions.every((tr) => tr.deleteSet.clients.size === 0))
          capture.deleteFree.add(update)
      }
    }
  }

  /**
   * True when an update holds nothing this document has: every client's
   * structs start exactly at our state, every range it deletes starts at
   * or after it (so names only items the update brings), and no earlier
   * update waits in Yjs's pending store (which applying this one could
   * integrate). Then the received bytes and Yjs's own encoding of the
   * change hold the same operations, and storing either replays to the
   * same document. A state exchange with a known peer fails this (it
   * carries the sender's whole delete set), and is re-encoded as before.
   */
  private bringsOnlyNew(meta: UpdateMeta): boolean {
    const store = this.doc.store
    if (store.pendingStructs !== null || store.pendingDs !== null) return false
    for (const [client, clock] of meta.from) if (clock !== Y.getState(store, client)) return false
    for (const [client, ranges] of meta.deletes) {
      const state = Y.getState(store, client)
      if (ranges.some(([start]) => start < state)) return false
    }
    return true
  }

  /**
   * True when applying an update would change nothing: nothing is pending
   * in Yjs (an update could complete it), this document holds every struct
   * the update holds, and every item it deletes is here and deleted.
   */
  private bringsNothing(meta: UpdateMeta): boolean {
    const store = this.doc.store
    if (store.pendingStructs !== null || store.pendingDs !== null) return false
    for (const [client, end] of meta.to) if (end > Y.getState(store, client)) return false
    for (const [client, ranges] of meta.deletes) {
      const structs = store.clients.get(client)
      const held = Y.getState(store, client)
      for (const [clock, end] of ranges) {
        if (end <= clock) continue
        if (structs === undefined || end > held) return false
        for (let i = Y.findIndexSS(structs, clock); i < structs.length; i++) {
          const struct = structs[i] as (typeof structs)[number]
          if (struct.id.clock >= end) break
          if (!struct.deleted) return false
        }
      }
    }
    return true
  }

  /**
   * True when Yjs can integrate all of an update now: for every client, the
   * update starts at or before what this document has, and every item it
   * deletes is here (or comes in the update itself). Otherwise Yjs would keep
   * the structs pending but apply the delete set as soon as its items arrive,
   * deleting an entry before the entry that replaces it is here: a user would
   * vanish for a while, and a device writing meanwhile would stamp a server
   * epoch older than the one it has received.
   */
  private canIntegrate(meta: UpdateMeta): boolean {
    const store = this.doc.store
    for (const [client, clock] of meta.from) if (clock > Y.getState(store, client)) return false
    for (const [client, ranges] of meta.deletes) {
      const upTo = Math.max(Y.getState(store, client), meta.to.get(client) ?? 0)
      if (ranges.some(([, end]) => end > upTo)) return false
    }
    return true
  }

  /** Integrates held-back updates that became ready, in the current batch. */
  private integrateHeldBack(ctx: WriteContext): void {
    let progress = true
    while (progress && this.heldBack.length > 0) {
      progress = false
      const ready = this.heldBack.all().findIndex((held) => this.canIntegrate(held.meta))
      if (ready >= 0) {
        this.applyHeld(this.heldBack.take(ready, 1), ctx)
        progress = true
      } else if (this.heldBack.length > 1) {
        // Updates that each miss something the other holds (relays of
        // several writers) can still be complete together. Whether they
        // are is read from their metadata (a merge starts each client at
        // the lowest clock of its parts, ends it at the highest, and
        // deletes what any part deletes), so a gap that no part fills
        // costs no merge: after every batch, it did, of every held update.
        if (this.canIntegrate(unionMeta(this.heldBack.all().map((held) => held.meta)))) {
          this.applyHeld(this.heldBack.takeAll(), ctx)
          progress = true
        }
      }
    }
  }

  private applyHeld(held: RemoteUpdate[], ctx: WriteContext): void {
    this.heldApplied = true
    const bytes =
      held.length === 1 ? (held[0] as RemoteUpdate).bytes : Y.mergeUpdates(held.map((h) => h.bytes))
    try {
      applyUpdate(this.doc, bytes, REMOTE_ORIGIN)
    } catch (error) {
      // Its sender's applyRemote resolved when it was held back, so the
      // refusal is recorded here; the next state-vector exchange resends
      // whatever of it is still missing.
      ctx.event({
        type: 'write-refused',
        code: 'MALFORMED_MESSAGE',
        message: `held-back update from ${held.map((h) => h.from ?? 'unknown').join(', ')} failed to apply: ${(error as Error).message}`,
      })
    }
  }
}

/**
 * Scans an update once: throws on malformed bytes (a strict validation, so
 * nothing of a malformed update is applied), returns what canIntegrate
 * needs. The scan skips over content values instead of building them.
 */
export function updateMeta(update: Uint8Array): UpdateMeta {
  return scanUpdate(update)
}

/** The metadata of the merge of updates with these metadata (see integrateHeldBack). */
function unionMeta(metas: readonly UpdateMeta[]): UpdateMeta {
  const from = new Map<number, number>()
  const to = new Map<number, number>()
  const deletes = new Map<number, Array<readonly [number, number]>>()
  for (const meta of metas) {
    for (const [client, clock] of meta.from)
      from.set(client, Math.min(clock, from.get(client) ?? clock))
    for (const [client, clock] of meta.to) to.set(client, Math.max(clock, to.get(client) ?? clock))
    for (const [client, ranges] of meta.deletes) {
      const all = deletes.get(client)
      if (all === undefined) deletes.set(client, [...ranges])
      else all.push(...ranges)
    }
  }
  return { from, to, deletes }
}

/** Whether a transaction changed the document: Yjs's own test before it emits 'update'. */
function changedDocument(tr: Y.Transaction): boolean {
  return tr.deleteSet.clients.size > 0 || grownClients(tr).length > 0
}
