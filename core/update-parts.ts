/**
 * One writer's part of a Yjs document or update, as an update of its own:
 * what a signed envelope carries (core/signing.ts). A writer signs only
 * what it authored — the structs of its own clientIDs and the deletes of
 * its own items — never a merge holding other writers' operations, which it
 * could not vouch for and receivers would refuse.
 *
 * Both functions write Yjs's v1 update format the way Yjs does (clients in
 * descending order, a delete set per client), so the result applies like
 * any update.
 */
import * as encoding from 'lib0/encoding'
import * as Y from 'yjs'
import { writeDeleteRanges, writeStructsFrom } from './delete-set.js'

type Struct = Y.Item | Y.GC | Y.Skip

/**
 * The structs of `clients` that a peer at `target` (a decoded state vector)
 * lacks, and the delete ranges of those clients' items: what a writer owns
 * of `doc` past `target`. Empty clients are left out; with nothing to send
 * the update is empty (two zero counts).
 */
export function encodeClientsDiff(
  doc: Y.Doc,
  target: ReadonlyMap<number, number>,
  clients: ReadonlySet<number>,
): Uint8Array {
  const encoder = new Y.UpdateEncoderV1()
  const store = doc.store
  const from = new Map<number, number>()
  for (const client of clients) {
    const structs = store.clients.get(client)
    const last = structs?.[structs.length - 1]
    if (last === undefined) continue
    const clock = target.get(client) ?? 0
    if (last.id.clock + last.length > clock) from.set(client, clock)
  }
  writeStructsFrom(encoder, store, from)
  const deleted = new Map<number, Array<[number, number]>>()
  for (const client of clients) {
    const ranges: Array<[number, number]> = []
    for (const struct of store.clients.get(client) ?? []) {
      if (!struct.deleted) continue
      const end = struct.id.clock + struct.length
      const prev = ranges[ranges.length - 1]
      if (prev !== undefined && prev[1] === struct.id.clock) prev[1] = end
      else ranges.push([struct.id.clock, end])
    }
    if (ranges.length > 0) deleted.set(client, ranges)
  }
  writeDeleteRanges(encoder, deleted)
  return encoder.toUint8Array()
}

/**
 * The part of `update` written under `clients`: their structs, and the
 * delete ranges of their items. Throws what `Y.decodeUpdate` throws on
 * malformed bytes.
 */
export function restrictUpdate(update: Uint8Array, clients: ReadonlySet<number>): Uint8Array {
  const decoded = Y.decodeUpdate(update)
  const byClient = new Map<number, Struct[]>()
  for (const struct of decoded.structs as Struct[]) {
    const client = struct.id.client
    if (!clients.has(client)) continue
    const list = byClient.get(client)
    if (list === undefined) byClient.set(client, [struct])
    else list.push(struct)
  }
  const encoder = new Y.UpdateEncoderV1()
  const rest = encoder.restEncoder
  encoding.writeVarUint(rest, byClient.size)
  for (const [client, structs] of [...byClient].sort((a, b) => b[0] - a[0])) {
    structs.sort((a, b) => a.id.clock - b.id.clock)
    encoding.writeVarUint(rest, structs.length)
    encoder.writeClient(client)
    encoding.writeVarUint(rest, (structs[0] as Struct).id.clock)
    for (const struct of structs) struct.write(encoder, 0)
  }
  const deleted = new Map<number, Array<[number, number]>>()
  for (const [client, items] of decoded.ds.clients) {
    if (!clients.has(client) || items.length === 0) continue
    deleted.set(
      client,
      items.map((d): [number, number] => [d.clock, d.clock + d.len]),
    )
  }
  writeDeleteRanges(encoder, deleted)
  return encoder.toUint8Array()
}
