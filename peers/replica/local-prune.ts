/**
 * Local-only state the document has made dead, dropped in the batch that
 * made it so (batch-runner.ts): imported entries and policies the document
 * now holds as new, and device-specific values of users a server delete
 * voided. Nothing a reader sees changes: the views never show either.
 */
import type * as Y from 'yjs'
import {
  asPolicyEntry,
  asServerEntry,
  SERVER_META_ROOT,
  usersRootName,
} from '../../core/entries.js'
import { SERVER_ID, type UserId } from '../../core/ids.js'
import {
  adoptionFor,
  laterPolicy,
  laterServerEntry,
  markHid,
  markHigh,
  type DeleteMark,
} from '../../core/resolve.js'
import type { LocalState } from './local-state.js'
import type { HeldBeforeRefetch, WriteContext } from './types.js'

/**
 * Drops imported entries and policies the document now holds as new
 * (issue 10): from then on the document's are read, and the import is
 * spent (replicaOf took the later already).
 */
export function pruneImported(
  doc: Y.Doc,
  local: LocalState,
  users: ReadonlySet<UserId>,
  policiesChanged: boolean,
  ctx: WriteContext,
): void {
  if (local.importedCount > 0) {
    const server = doc.getMap(usersRootName(SERVER_ID))
    for (const id of users) {
      const imported = local.importedOf(id)
      if (imported === undefined) continue
      const held = asServerEntry(server.get(id))
      if (held !== undefined && laterServerEntry(held, imported) === held)
        ctx.setImported(id, undefined)
    }
  }
  const importedPolicies = local.importedPolicyEntries()
  if (policiesChanged && importedPolicies.size > 0) {
    const meta = doc.getMap(SERVER_META_ROOT)
    for (const [field, imported] of [...importedPolicies]) {
      const held = asPolicyEntry(meta.get(field))
      if (held !== undefined && laterPolicy(held, imported) === held)
        ctx.setImportedPolicy(field, undefined)
    }
  }
}

/**
 * Settles the delete marks (rule 3) of the users they hid, after the
 * device found its server restored from a backup and fetched its roster
 * again (the refetch: peers/device-sync/generation-move.ts), or moved to
 * another generation (`restored.forward`: see within), in the batch that
 * commits it:
 * - the fetched entry is the one the mark names or one it replaced
 *   (`restored.hidden` holds those versions; on a move back to a
 *   generation it left, one it held there, its stamp not above the
 *   highest the mark hid: `restored.seen`), or there is none: the server
 *   only rolled back, which is no change. The mark is set to that entry's
 *   stamp (0 for none), so the user stays hidden until the server's next
 *   change, whatever stamp that takes (a restored server's may be below the
 *   rolled-back ones: its clock follows device stamps up to an hour ahead
 *   of it); it keeps the highest stamp it hid (DeleteMark.h);
 * - any other entry (the restored server wrote it since, whichever way it
 *   reached this device), or a fill the server will adopt again (this
 *   device carries its own entries over the fetch): a change of the user,
 *   which shows it. The mark is dropped: the stamp of such an entry may be
 *   the very one it names (an adoption is stamped just past its fill's, as
 *   the rolled-back one was).
 */
export function settleMarks(
  doc: Y.Doc,
  local: LocalState,
  ctx: WriteContext,
  restored: HeldBeforeRefetch,
): void {
  const server = doc.getMap(usersRootName(SERVER_ID))
  const items = server._map
  const policies = ctx.policies()
  for (const [id, versions] of restored.hidden) {
    const { deleted } = local.localOf(id)
    if (deleted === undefined) continue
    const item = items.get(id)
    const live = item === undefined || item.deleted ? undefined : item
    const t = live === undefined ? 0 : (asServerEntry(server.get(id))?.t ?? 0)
    if (restored.forward === true) {
      // A move forward: the copy of the entry the mark names (the same
      // stamp), a later change (a greater one: dropped, against the stamp
      // it names now, not the highest it hid: a change the restored server
      // made since may take one up to that), or a lower one: the server was
      // restored before it compacted and the device never heard of it, a
      // rollback kept hidden (a change made since takes a greater stamp
      // than the lost ones, unless devices with clocks ahead pushed those:
      // then it stays hidden until the next). The mark then names the
      // copy's item, which a later restore's refetch walks from; no entry,
      // as a restore's: hidden until the next change.
      if (t > deleted.t) ctx.setDeleted(id, undefined)
      else setMark(id, deleted, live, t, ctx, undefined)
      continue
    }
    const rolledBack =
      live === undefined ||
      // Held there, and not above what the mark hid (a mark made after an
      // earlier move back did not hide that generation's later versions).
      (live.id.clock < (restored.seen?.get(live.id.client) ?? 0) && t <= markHigh(deleted)) ||
      versions.some(
        ([client, clock, length]) =>
          live.id.client === client && live.id.clock >= clock && live.id.clock < clock + length,
      )
    if (!rolledBack || adoptionFor(ctx.replicaOf(id), policies) !== undefined) {
      ctx.setDeleted(id, undefined)
      continue
    }
    // What it hid, kept with what it hid before for a later restore of
    // this generation (a move back walked the other generation's items:
    // none kept).
    setMark(
      id,
      deleted,
      live,
      t,
      ctx,
      restored.seen === undefined ? hidWith(deleted.p, versions) : undefined,
    )
  }
}

/**
 * `before` (DeleteMark.p) with `versions` ([client, clock, length]): the
 * highest clock per clientID of both.
 */
function hidWith(
  before: DeleteMark['p'],
  versions: ReadonlyArray<readonly [number, number, number]>,
): DeleteMark['p'] {
  const highest = new Map<number, number>(before)
  for (const [client, clock, length] of versions)
    highest.set(client, Math.max(highest.get(client) ?? 0, clock + length - 1))
  return highest.size === 0 ? undefined : [...highest].sort(([a], [b]) => a - b)
}

/**
 * Sets `deleted` to name the entry `live` (stamp `t`; none: 0), keeping
 * the highest stamp it hid (DeleteMark.h) when that one is older, and
 * `hid` as the versions it hid (DeleteMark.p).
 */
function setMark(
  id: UserId,
  deleted: DeleteMark,
  live: Y.Item | undefined,
  t: number,
  ctx: WriteContext,
  hid: DeleteMark['p'],
): void {
  const high = markHigh(deleted)
  const mark: DeleteMark = {
    t,
    ...(live && { v: [live.id.client, live.id.clock] as const }),
    ...(high > t && { h: high }),
    ...(hid && { p: hid }),
  }
  if (
    mark.t !== deleted.t ||
    mark.h !== deleted.h ||
    mark.v?.[0] !== deleted.v?.[0] ||
    mark.v?.[1] !== deleted.v?.[1] ||
    JSON.stringify(mark.p) !== JSON.stringify(deleted.p)
  )
    ctx.setDeleted(id, mark)
}

/**
 * Drops this peer's local-only state of `users` that the document made
 * dead, which no view reads again:
 * - device-specific values written at an epoch below the server's (a server
 *   delete voided them, rule 4). Kept, a deleted user's values stayed on
 *   disk and in memory for good (years probe: 3 MB of device-specific
 *   templates for 300 deleted users, through full syncs and generations);
 * - delete marks (rule 3) of a server entry since changed: a mark hides the
 *   user only while the server's stamp is the one it names, and the
 *   server's stamps only grow past the highest it hid (a restore's
 *   rollback is settled at its refetch: settleMarks; DeleteMark.h). Only
 *   a full sync cleared them, so a device that never runs one kept a mark
 *   for every user it ever hid.
 * Only against a server entry the document holds: a staged or restored
 * document that lacks it (or holds an older one) drops nothing.
 */
export function pruneDeadLocal(
  doc: Y.Doc,
  local: LocalState,
  users: Iterable<UserId>,
  ctx: WriteContext,
): void {
  const server = doc.getMap(usersRootName(SERVER_ID))
  for (const id of users) {
    const { fields, deleted } = local.localOf(id)
    if (fields === undefined && deleted === undefined) continue
    const held = asServerEntry(server.get(id))
    if (held === undefined) continue
    if (fields !== undefined && (fields.e ?? 0) < held.e) ctx.setLocalFields(id, undefined)
    if (deleted === undefined || held.t === deleted.t) continue
    // A version the mark hid before a rollback, back by a later restore's
    // document (a backup taken after the first's: no restore to the
    // device, only entries it lacks): still hidden, the mark names it.
    const item = server._map.get(id)
    if (item !== undefined && markHid(deleted, item.id.client, item.id.clock))
      setMark(id, deleted, item, held.t, ctx, deleted.p)
    else if (held.t > markHigh(deleted)) ctx.setDeleted(id, undefined)
  }
}
