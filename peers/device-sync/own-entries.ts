/**
 * A device's own entries read out of a document, and written into
 * another: what a generation move (./generation-move.ts) and a retention
 * wipe (./retained.ts) keep of this device's writes while the roster goes.
 */
import type * as Y from 'yjs'
import { asDeviceEntry, usersRootName, type DeviceEntry } from '../../core/entries.js'
import { asUserId, type UserId } from '../../core/ids.js'
import { mergeDeviceEntries, sameDeviceStamps } from '../../core/writes.js'
import type { Replica, WriteContext } from '../replica.js'

/** This device's own part of `doc`: its entry for every user it wrote. */
export function ownEntries(doc: Y.Doc, replica: Replica): Map<UserId, DeviceEntry> {
  return partEntries(doc, usersRootName(replica.writerId))
}

/** A writer's part of `doc` (root `root`): its entry for every user it wrote. */
export function partEntries(doc: Y.Doc, root: string): Map<UserId, DeviceEntry> {
  const entries = new Map<UserId, DeviceEntry>()
  if (!doc.share.has(root)) return entries
  for (const [key, value] of doc.getMap<unknown>(root).entries()) {
    const entry = asDeviceEntry(value)
    if (entry !== undefined) entries.set(asUserId(key), entry)
  }
  return entries
}

/**
 * Writes into the new generation each carried own entry it lacks or holds
 * older, merged field by field with the one it holds. Rule 4: an entry
 * older than the server's epoch is void, not carried; a newer one follows a
 * delete a restored server lost, and goes on the user it holds, at its epoch.
 * Returns how many users got a write.
 */
export function carry(
  ctx: WriteContext,
  replica: Replica,
  carried: ReadonlyMap<UserId, DeviceEntry>,
): number {
  let written = 0
  const root = usersRootName(replica.writerId)
  const part = replica.doc.share.has(root) ? replica.doc.getMap<unknown>(root) : undefined
  for (const [id, entry] of carried) {
    const epoch = replica.replicaOf(id).server?.e ?? 0
    if (entry.e < epoch) continue
    const held = asDeviceEntry(part?.get(id))
    const at = entry.e > epoch ? { ...entry, e: epoch } : entry
    const merged = held === undefined ? at : mergeDeviceEntries([held, at])
    if (held !== undefined && sameDeviceStamps(merged, held)) continue
    ctx.setOwnEntry(id, merged)
    written++
  }
  return written
}
