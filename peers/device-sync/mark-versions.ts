/**
 * What a device's delete marks (rule 3) hid before it fetched its restored
 * server's roster again (PROTOCOL.md, "A restored server"): read before the
 * refetch's staged wipe, settled against the fetched entries at its commit
 * (peers/replica/local-prune.ts, settleMarks).
 */
import * as Y from 'yjs'
import { usersRootName } from '../../core/entries.js'
import { SERVER_ID, type UserId } from '../../core/ids.js'
import { deleteHides } from '../../core/resolve.js'
import type { HeldBeforeRefetch, Replica } from '../replica.js'

/** Most versions of one user's server entry walked back (heldBeforeRefetch). */
const VERSIONS_WALKED_MAX = 10_000

/**
 * The users a device's delete marks hide before a refetch, each with the
 * versions of its server entry up to the one the mark names: that entry's
 * item and the items it replaced (its origin, theirs, and so on: a Y.Map
 * entry's origin is the item it overwrote). A sibling that lost a
 * concurrent write to it is not among them (its origin is an older one).
 * Without `walk`, the users only (a move forward: no versions compared).
 */
export function heldBeforeRefetch(replica: Replica, walk = true): HeldBeforeRefetch {
  const hidden = new Map<UserId, Array<readonly [number, number, number]>>()
  const root = replica.doc.getMap(usersRootName(SERVER_ID))
  const items = root._map
  const store = replica.doc.store
  // Only users with local state can hold a mark: not every user's entries resolved.
  for (const id of replica.localIds()) {
    const mark = replica.localOf(id).deleted
    if (!deleteHides(mark, replica.replicaOf(id))) continue
    const versions: Array<readonly [number, number, number]> = []
    hidden.set(id, versions)
    if (!walk) continue
    // From the version the mark names (its stamp may be another's too: a
    // restored server's entry relayed before the refetch), else the entry
    // held now.
    let struct: Y.AbstractStruct | undefined =
      mark?.v === undefined ? items.get(id) : structAt(store, Y.createID(mark.v[0], mark.v[1]))
    while (struct !== undefined && versions.length < VERSIONS_WALKED_MAX) {
      versions.push([struct.id.client, struct.id.clock, struct.length])
      const origin: Y.ID | null = struct instanceof Y.Item ? struct.origin : null
      struct = origin === null ? undefined : structAt(store, origin)
    }
  }
  return { hidden }
}

/** The struct holding `id` in `store`, if it holds one (Yjs throws when it does not). */
function structAt(store: Y.Doc['store'], id: Y.ID): Y.AbstractStruct | undefined {
  try {
    return Y.getItem(store, id)
  } catch {
    return undefined
  }
}
