/**
 * What an envelope's update brings a document, read off its strict scan
 * (core/update-scan.ts) before it is applied: structs the document lacks,
 * deletes of items it holds, or nothing at all (then it is neither
 * verified nor applied: OpenedEnvelope.nothing, peers/signed-link.ts).
 */
import * as Y from 'yjs'
import { SERVER_ID } from '../core/ids.js'
import type { Envelope } from '../core/signing.js'
import type { UpdateRanges } from '../core/update-scan.js'
import { bringsLost, lostClocks } from './device-sync/lost-clocks.js'
import type { Replica } from './replica.js'

/** True when the update (its scan) holds structs `doc` lacks. */
export function bringsStructs(doc: Y.Doc, ranges: UpdateRanges): boolean {
  for (const [client, end] of ranges.to) if (end > Y.getState(doc.store, client)) return true
  return false
}

/**
 * True when `test` holds for some struct `doc` holds and has not deleted
 * yet that the update's delete set names (walked in the update's order).
 */
function someDeleteHeld(
  doc: Y.Doc,
  ranges: UpdateRanges,
  test: (struct: Y.Item | Y.GC) => boolean,
): boolean {
  for (const [client, list] of ranges.deletes) {
    const structs = doc.store.clients.get(client)
    if (structs === undefined || structs.length === 0) continue
    const held = Y.getState(doc.store, client)
    for (const [clock, end] of list) {
      if (clock >= held || end <= clock) continue
      for (let i = Y.findIndexSS(structs, clock); i < structs.length; i++) {
        const struct = structs[i] as (typeof structs)[number]
        if (struct.id.clock >= end) break
        if (!struct.deleted && test(struct)) return true
      }
    }
  }
  return false
}

/**
 * True when the update's delete set deletes an item `doc` holds and has
 * not deleted yet (what a delete-only envelope brings).
 */
export function deletesHeld(doc: Y.Doc, ranges: UpdateRanges): boolean {
  return someDeleteHeld(doc, ranges, () => true)
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

/**
 * True when the update brings no structs and deletes a value `doc` shows
 * (the current item of a map key): a delete set alone. A state exchange's
 * answer carries its sender's whole delete set: a LAN peer that asked with
 * everything the server holds got an envelope of the server's deletes
 * alone, and relayed it to a device behind the server, where the old
 * entries the server had replaced went without their replacements: users
 * vanished until its next server sync (a hostile probe). The writers'
 * rules delete a shown value only with the item that replaces it (an
 * entry is replaced, a user deleted with a mark), but for the server's
 * take-back of a revocation, which comes from the server then. Such an
 * envelope is not taken (OpenedEnvelope.nothing). One that brings structs
 * is taken (Yjs holds what lacks its origins): judging which of its
 * deletes are replaced dropped honest envelopes (a writer's two clients
 * writing one key at once; a review).
 */
export function deletesUnreplaced(doc: Y.Doc, ranges: UpdateRanges): boolean {
  if (ranges.to.size > 0) return false
  return someDeleteHeld(
    doc,
    ranges,
    (struct) => struct instanceof Y.Item && struct.parentSub !== null,
  )
}

/**
 * Whether a device leaves untaken (OpenedEnvelope.nothing) an envelope a
 * LAN link offers (`peer`: the device its certificate names, when known):
 * the server's operations a restore of the server took away, offered by a
 * peer still behind (./device-sync/lost-clocks.ts), and deletes of values
 * shown here without what replaces them, relayed for another writer
 * ({@link deletesUnreplaced}).
 */
export function untakenOverLan(
  replica: Replica,
  envelope: Envelope,
  ranges: UpdateRanges,
  peer: string | undefined,
): boolean {
  if (envelope.writer === SERVER_ID && bringsLost(lostClocks(replica), ranges)) return true
  return envelope.writer !== peer && deletesUnreplaced(replica.doc, ranges)
}
