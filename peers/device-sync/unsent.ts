/**
 * Whether a device holds changes of its own its server has not
 * acknowledged, across restarts: a device opened past its retention wipes
 * at once only when it holds none. A terminal whose clock ran 11 days
 * behind while it was used offline, set right at its next boot, looked
 * unused for 11 days, and its wipe took its acknowledged offline writes
 * with it (a probe). Its own clientIDs' clocks the server acknowledged at
 * the last successful round are kept in the sync record (`acked`).
 */
import * as Y from 'yjs'
import { writersOfClients } from '../../core/authorize.js'
import type { Replica } from '../replica.js'

/**
 * Own clientIDs and their clocks, as `acknowledged` (a server answer's
 * state) holds them; undefined when that is what `kept` says already
 * (nothing to store again).
 */
export function ackedOwn(
  replica: Replica,
  acknowledged: ReadonlyMap<number, number>,
  kept?: ReadonlyArray<readonly [number, number]>,
): Array<[number, number]> | undefined {
  const out: Array<[number, number]> = []
  for (const [client, writer] of writersOfClients(replica.doc, acknowledged.keys()))
    if (writer === replica.writerId) out.push([client, acknowledged.get(client) ?? 0])
  const same =
    kept !== undefined &&
    kept.length === out.length &&
    out.every(([client, clock], i) => kept[i]?.[0] === client && kept[i]?.[1] === clock)
  return same ? undefined : out
}

/**
 * True when the document holds operations of this device's own clientIDs
 * past `acked` (all of them, when nothing was ever acknowledged).
 */
export function holdsUnsent(
  replica: Replica,
  acked: ReadonlyArray<readonly [number, number]> | undefined,
): boolean {
  const { doc } = replica
  const held = new Map(acked ?? [])
  for (const [client, writer] of writersOfClients(doc, doc.store.clients.keys()))
    if (writer === replica.writerId && Y.getState(doc.store, client) > (held.get(client) ?? 0))
      return true
  return false
}
