/**
 * A transaction's update, as Yjs's 'update' event carries it, written from
 * the clients the transaction grew instead of every client the document has
 * seen.
 *
 * To encode the event, Yjs walks the state vectors whole three times
 * (`writeClientsStructs`: the state before, then a fresh state vector of the
 * store, each into a new map), on top of the two state vectors every
 * transaction takes. On a server with 1,000 devices (and more clientIDs)
 * that was about 4% of its main thread under the load bench, for updates
 * of a few structs. This writes the same structs (each grown client from
 * its clock before, higher clientIDs first) and the transaction's own delete
 * set, from `grownClients`.
 *
 * Read it where Yjs would emit 'update' ('afterTransactionCleanup': after
 * garbage collection and merging, so the structs are the ones Yjs writes).
 * One difference: when observers or listeners write during the cleanup
 * (nothing in rostersync does), Yjs's encoding takes in the later
 * transaction's structs under every client, where this takes them only
 * under the clients this transaction grew too (it writes each grown
 * client's structs to the end of the store). Every later transaction has
 * its own update, so what is stored and told holds all of them either way.
 */
import * as Y from 'yjs'
import { writeDeleteRanges, writeStructsFrom } from './delete-set.js'
import { grownClients } from './grown-clients.js'

/** The update of `tr` (V1), or undefined when it changed nothing (Yjs then emits no 'update'). */
export function transactionUpdate(tr: Y.Transaction): Uint8Array | undefined {
  const grown = grownClients(tr)
  const deleted = tr.deleteSet.clients
  if (grown.length === 0 && deleted.size === 0) return undefined
  const encoder = new Y.UpdateEncoderV1()
  const from = new Map<number, number>()
  for (const { client, before } of grown) from.set(client, before)
  writeStructsFrom(encoder, tr.doc.store, from)
  // The delete set (sorted and merged by then), written as Yjs's
  // writeDeleteSet writes it.
  const ranges = new Map<number, Array<[number, number]>>()
  deleted.forEach((items, client) =>
    ranges.set(
      client,
      items.map((item): [number, number] => [item.clock, item.clock + item.len]),
    ),
  )
  writeDeleteRanges(encoder, ranges)
  return encoder.toUint8Array()
}
