/**
 * What a retention wipe keeps of this device's own changes its server
 * lacked (README, "Retention"). The push before the wipe fails when the
 * server is out of reach, and a terminal booting past its retention before
 * its network is up always failed it: the wipe took saved writes with the
 * roster (left open since session 26, measured by a probe). The roster
 * still goes, as the spec asks; this device's own entries are kept in a
 * peer-local record, shown nowhere, and written into the roster the next
 * full sync fetches (as a generation move carries them: ./own-entries.ts),
 * then pushed. Rule 4 holds: an entry of a user the server deleted
 * meanwhile is void and dropped.
 */
import { asDeviceEntry, usersRootName, type DeviceEntry } from '../../core/entries.js'
import { asUserId, type UserId } from '../../core/ids.js'
import { mergeDeviceEntries } from '../../core/writes.js'
import type { Replica } from '../replica.js'
import { carry, ownEntries } from './own-entries.js'

/** The record: [user id, own entry] pairs, as they were at the wipe. */
const RETAINED = ['sync', 'retained'] as const

/** The stored entries (none when the record is absent or unreadable). */
function stored(replica: Replica): Map<UserId, DeviceEntry> {
  const out = new Map<UserId, DeviceEntry>()
  const value = replica.record(...RETAINED)
  if (!Array.isArray(value)) return out
  for (const pair of value as unknown[]) {
    if (!Array.isArray(pair) || typeof pair[0] !== 'string') continue
    const entry = asDeviceEntry(pair[1])
    if (entry !== undefined) out.set(asUserId(pair[0]), entry)
  }
  return out
}

/**
 * The records a retention wipe stores in its batch: this device's own
 * entries in `doc` whose item the server has not acknowledged (`acked`,
 * as in ./unsent.ts: its clientID's clock past what was acknowledged, or
 * never acknowledged), merged with any kept by an earlier wipe not yet
 * written back (none when there are none). Entries the server holds go
 * with the roster (a review: all were kept).
 */
export function retainedRecords(
  replica: Replica,
  doc = replica.doc,
  acked: ReadonlyArray<readonly [number, number]> = [],
): Array<[string, string, unknown]> {
  const entries = stored(replica)
  const held = new Map(acked)
  const part = doc.share.has(usersRootName(replica.writerId))
    ? doc.getMap<unknown>(usersRootName(replica.writerId))
    : undefined
  for (const [id, entry] of ownEntries(doc, replica)) {
    const item = part?._map.get(id)
    if (item !== undefined && item.id.clock < (held.get(item.id.client) ?? 0)) continue
    const earlier = entries.get(id)
    entries.set(id, earlier === undefined ? entry : mergeDeviceEntries([earlier, entry]))
  }
  return entries.size === 0 ? [] : [[...RETAINED, [...entries]]]
}

/** Whether a retention wipe kept entries not yet written back. */
export function holdsRetained(replica: Replica): boolean {
  return replica.record(...RETAINED) !== undefined
}

/**
 * Writes the kept entries into the roster (which must be the server's,
 * fetched since the wipe), dropping the record in the same batch; resolves
 * with how many users got a write (0 when nothing was kept or the roster
 * held them all).
 */
export async function writeRetained(replica: Replica): Promise<number> {
  if (!holdsRetained(replica)) return 0
  return replica.write((ctx) => {
    const written = carry(ctx, replica, stored(replica))
    ctx.setRecord(...RETAINED, undefined)
    return written
  })
}
