/**
 * Canaries: deliberately broken rules, to show that the checks can fail
 * (STYLE.md, "Test the harness"). Each breaks one rule by wrapping a
 * production peer from outside, never by changing `peers/` or `server-peer/`:
 *
 * - `device-view`: devices show their own values over the server's (breaks
 *   rule 1; caught by the server-wins check);
 * - `no-adoption`: the server stops adopting device fills (breaks rule 2;
 *   caught by the server-fills-vacant check);
 * - `leak-delete`: a device's delete also removes its own entry from the
 *   replicated document (made empty first when it had none), which its
 *   next message then carries (breaks rule 3; caught by the network tap);
 * - `lose-write`: the server's store acknowledges a write and then forgets
 *   it at the next restart, and the devices' stores go back as far (so no
 *   device relays the server's signed write back to it); breaks "no
 *   acknowledged write is lost"; caught by the write ledger.
 */
import { usersRootName } from '../core/entries.js'
import { asUserId, asWriterId, type UserId } from '../core/ids.js'
import type { UserView } from '../core/resolve.js'
import type { DevicePeer } from '../peers/create-device.js'
import type { ServerPeer } from '../server-peer/create-server.js'

/** Breaks rule 1 on a device: its own values win in its view. */
export function breakDeviceView(device: DevicePeer): void {
  const replica = device.replica
  const view = replica.view.bind(replica)
  const self = asWriterId(device.id)
  replica.view = (id: UserId): UserView | undefined => {
    const shown = view(id)
    const own = replica.replicaOf(id).devices.find(([writer]) => writer === self)?.[1]
    if (shown === undefined || own === undefined) return shown
    return { ...shown, ...own.f, id }
  }
}

/** Breaks rule 2 on the server: device fills are never adopted. */
export function breakAdoption(server: ServerPeer): void {
  // The hooks object is the one createServer passed to Replica.open; the
  // replica keeps it in its (private) options. Reaching in is the point: the
  // canary must not need a change to the peer code.
  const options = (server.replica as unknown as { options: { hooks?: { afterRemote?: unknown } } })
    .options
  if (options.hooks !== undefined) options.hooks.afterRemote = () => undefined
}

/** Breaks rule 3 on a device, after a delete of `userId` it made. */
export async function leakDelete(device: DevicePeer, userId: string): Promise<void> {
  const replica = device.replica
  const id = asUserId(userId)
  const map = () => replica.doc.getMap(usersRootName(asWriterId(device.id)))
  // A device that never filled the user holds no entry to delete: one is
  // made first (empty, no field filled), so that every delete leaks (the
  // canary fired only on users the device had filled, and a swarm run
  // whose deletes hit none passed).
  // An entry carried into a generation's base is an item of the server's
  // compaction, not of this device: its delete is not this device's to
  // send, and never left it (a sim probe: the run passed). So the entry is
  // written again first, as this device's own item, and that one deleted.
  const self = asWriterId(device.id)
  const own = replica.replicaOf(id).devices.find(([writer]) => writer === self)?.[1]
  await replica.write((ctx) =>
    ctx.setOwnEntry(id, own ?? { e: replica.replicaOf(id).server?.e ?? 0, f: {}, s: {} }),
  )
  await replica.write(() => {
    if (map().has(id)) map().delete(id)
  })
}
