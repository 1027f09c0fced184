/**
 * What an envelope's update brings a document, read off its strict scan
 * (core/update-scan.ts) before it is applied: structs the document lacks,
 * deletes of items it holds, or nothing at all (then it is neither
 * verified nor applied: OpenedEnvelope.nothing, peers/signed-link.ts).
 */
import * as Y from 'yjs'
import type { UpdateRanges } from '../core/update-scan.js'

/** True when the update (its scan) holds structs `doc` lacks. */
export function bringsStructs(doc: Y.Doc, ranges: UpdateRanges): boolean {
  for (const [client, end] of ranges.to) if (end > Y.getState(doc.store, client)) return true
  return false
}

/**
 * True when the update's delete set deletes an item `doc` holds and has
 * not deleted yet (what a delete-only envelope brings).
 */
export function deletesHeld(doc: Y.Doc, ranges: UpdateRanges): boolean {
  for (const [client, list] of ranges.deletes) {
    const structs = doc.store.clients.get(client)
    if (structs === undefined || structs.length === 0) continue
    const held = Y.getState(doc.store, client)
    for (const [clock, end] of list) {
      if (clock >= held || end <= clock) continue
      for (let i = Y.findIndexSS(structs, clock); i < structs.length; i++) {
        const struct = structs[i] as (typeof structs)[number]
        if (struct.id.clock >= end) break
        if (!struct.deleted) return true
      }
    }
  }
  return false
}

/** True when the update brings `doc` something: structs it lacks, or deletes of items it holds. */
export function bringsNews(doc: Y.Doc, ranges: UpdateRanges): boolean {
  return bringsStructs(doc, ranges) || deletesHeld(doc, ranges)
}

/**
 * True when applying the update would change nothing in `doc`: no struct
 * it lacks, and every delete within what it holds and deleted already (a
 * delete beyond is kept by Yjs until its item comes). Such an envelope is
 * neither verified nor applied (OpenedEnvelope.nothing): a probe flooded
 * the server with valid envelopes of empty updates, 100,000 a message,
 * each one a signature check (a legitimate client's p99 6-10x idle).
 */
export function bringsNothing(doc: Y.Doc, ranges: UpdateRanges): boolean {
  return !bringsNews(doc, ranges) && !deletesAhead(doc, ranges)
}

/** True when the update's delete set reaches past what `doc` holds of a client (kept by Yjs for later). */
export function deletesAhead(doc: Y.Doc, ranges: UpdateRanges): boolean {
  for (const [client, list] of ranges.deletes) {
    const held = Y.getState(doc.store, client)
    for (const [clock, end] of list) if (end > clock && end > held) return true
  }
  return false
}
