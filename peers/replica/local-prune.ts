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
import { laterPolicy, laterServerEntry } from '../../core/resolve.js'
import type { LocalState } from './local-state.js'
import type { WriteContext } from './types.js'

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
 * Drops this peer's local-only state of `users` that the document made
 * dead, which no view reads again:
 * - device-specific values written at an epoch below the server's (a server
 *   delete voided them, rule 4). Kept, a deleted user's values stayed on
 *   disk and in memory for good (years probe: 3 MB of device-specific
 *   templates for 300 deleted users, through full syncs and generations);
 * - delete marks (rule 3) of a server entry since changed: a mark hides the
 *   user only while the server's stamp is the one it names, and the
 *   server's stamps only grow. Only a full sync cleared them, so a device
 *   that never runs one kept a mark for every user it ever hid.
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
    if (deleted !== undefined && held.t > deleted.t) ctx.setDeleted(id, undefined)
  }
}
