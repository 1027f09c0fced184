/**
 * How much history a Yjs document holds, kept up to date as it changes
 * (issue 13: the server's automatic generation check). Scanning every
 * struct of an aged document for each check costs as much as the document
 * is large (millions of structs); this counts once, when it first sees a
 * document, and then only what each transaction touched.
 *
 * Every client's structs cover its clocks 0 to its state without a gap,
 * so the clock units of a document are the sum of its state vector (Yjs's
 * own counter, one look per client): the deleted ones are counted here,
 * the live ones are the rest. After a transaction, the units deleted are
 * those its delete set names below the state it started from (what
 * existed and was deleted) plus the deleted parts of the structs it added
 * (GC and deleted content arriving, or items deleted in the same
 * transaction): each unit is counted once, since Yjs deletes an item once.
 *
 * Pure (no clock, no I/O); a document replaced (a new generation, a wipe)
 * is counted afresh on the first look at it.
 */
import * as Y from 'yjs'
import { grownClients } from './grown-clients.js'

/** What a document holds, in clock units (one per map entry written). */
export interface HistoryFigures {
  /** clientIDs of the state vector. */
  readonly clients: number
  /** Clock units deleted (overwritten entries, tombstones' history). */
  readonly deleted: number
  /** Clock units live. */
  readonly live: number
}

/** Deleted clock units of `doc`, by a scan of every struct (the count's start). */
export function scanDeletedUnits(doc: Y.Doc): { deleted: number; structs: number } {
  let deleted = 0
  let structs = 0
  for (const list of doc.store.clients.values()) {
    structs += list.length
    for (const struct of list) if (struct.deleted) deleted += struct.length
  }
  return { deleted, structs }
}

/** Clock units of `doc`: the sum of its state vector. */
function clockUnits(doc: Y.Doc): number {
  let units = 0
  for (const list of doc.store.clients.values()) {
    const last = list[list.length - 1]
    if (last !== undefined) units += last.id.clock + last.length
  }
  return units
}

/** A document's history figures, maintained incrementally. */
export class HistoryCount {
  private doc: Y.Doc | undefined
  private deleted = 0
  /** Structs visited by full scans so far (one per document seen; tests read it). */
  scannedStructs = 0
  private readonly onTransaction = (transaction: Y.Transaction): void => this.count(transaction)
  private readonly onDestroy = (): void => this.detach()

  /** The figures of `doc` now; counts it whole only when it is new to this count. */
  of(doc: Y.Doc): HistoryFigures {
    if (doc !== this.doc) this.attach(doc)
    const units = clockUnits(doc)
    return { clients: doc.store.clients.size, deleted: this.deleted, live: units - this.deleted }
  }

  /** Stops following the document. */
  detach(): void {
    this.doc?.off('afterTransaction', this.onTransaction)
    this.doc?.off('destroy', this.onDestroy)
    this.doc = undefined
  }

  private attach(doc: Y.Doc): void {
    this.detach()
    const scan = scanDeletedUnits(doc)
    this.scannedStructs += scan.structs
    this.deleted = scan.deleted
    this.doc = doc
    doc.on('afterTransaction', this.onTransaction)
    doc.on('destroy', this.onDestroy)
  }

  private count(transaction: Y.Transaction): void {
    const { beforeState } = transaction
    // Units that existed before the transaction and were deleted in it.
    for (const [client, ranges] of transaction.deleteSet.clients) {
      const before = beforeState.get(client) ?? 0
      for (const range of ranges) {
        const end = Math.min(range.clock + range.len, before)
        if (end > range.clock) this.deleted += end - range.clock
      }
    }
    // Units the transaction added that are deleted as it ends.
    const store = transaction.doc.store.clients
    for (const { client, before, after } of grownClients(transaction)) {
      const structs = store.get(client)
      if (structs === undefined) continue
      for (let i = Y.findIndexSS(structs, before); i < structs.length; i++) {
        const struct = structs[i] as Y.Item | Y.GC
        const from = Math.max(struct.id.clock, before)
        if (from >= after) break
        if (struct.deleted) this.deleted += Math.min(struct.id.clock + struct.length, after) - from
      }
    }
  }
}
