/**
 * `device.importUsers` (SEMANTICS.md, "Export / import"): the server
 * entries of an export file, checked (`core/export-file.ts`), kept as
 * local-only imported entries that read as the server's until the
 * document's own are as new (ARCHITECTURE.md, "Export / import").
 */
import { MalformedMessageError, SyncRunningError } from '../core/errors.js'
import { readExportFile } from '../core/export-file.js'
import type { WriterId } from '../core/ids.js'
import { laterPolicy, laterServerEntry } from '../core/resolve.js'
import type { RecordSchema } from '../core/schema.js'
import type { OverrideLog } from './device-ops.js'
import type { Identity } from './identity.js'
import type { Replica } from './replica.js'
import type { LinkState } from './ws-client.js'

/** What `device.importUsers` resolves with. */
export interface ImportResult {
  /** Users whose server entry the file brought (newer than what the device held). */
  readonly imported: number
  /** Users the device already held as new as the file (left as they were). */
  readonly unchanged: number
  /** Until when the file was valid, ms since the epoch (the server's clock). */
  readonly expiresAt: number
}

/** What an import needs of the device. */
export interface ImportTarget {
  readonly self: WriterId
  readonly replica: Replica
  readonly schema: RecordSchema
  readonly identity: Identity
  readonly siteKey: string | undefined
  /** The server key's fingerprint given for a device never admitted (see readExportFile). */
  readonly serverKeyFingerprint: string | undefined
  readonly overrides: OverrideLog
  /** The server link's state ('none': no server configured). */
  linkState(): LinkState | 'none'
}

/**
 * Imports an export file. Refused, changing nothing: `SYNC_RUNNING` while
 * the device is connected to its server (its sync brings the server's data
 * itself), and every fault of the file (`readExportFile`): a missing or
 * wrong passphrase for a passphrase file (`EXPORT_PASSPHRASE_INVALID`), no
 * site key for a site-key file (`EXPORT_SITE_KEY_REQUIRED`) included. (A
 * storage failure after the server's key is pinned leaves the pin, which
 * the file named: importing again completes it.)
 */
export async function importUsers(
  target: ImportTarget,
  file: unknown,
  passphrase: string | undefined,
): Promise<ImportResult> {
  if (!(file instanceof Uint8Array))
    throw new MalformedMessageError('importUsers takes the export file as bytes (a Uint8Array)')
  if (target.linkState() === 'connected')
    throw new SyncRunningError(
      'this device is connected to its server, whose data reaches it by sync; import only on a device whose sync is stopped (offline, or opened without a server)',
    )
  const contents = await readExportFile(file, {
    passphrase,
    // In its server's time, as it stamps (an export expires by the server's clock).
    now: target.replica.stampTime.now(),
    pinnedServerKey: target.identity.serverKey,
    siteKey: target.siteKey,
    serverKeyFingerprint: target.serverKeyFingerprint,
    schema: target.schema,
  })
  // A device never admitted takes the file on the fingerprint it was
  // given: that key is its server's from now on (a hello with another key
  // is refused, SERVER_KEY_CHANGED), so what it imports and what its server
  // later sends are one writer's. Pinned before the import is written (the
  // file is checked already): a crash between the two writes leaves a pin
  // and no import, which importing again completes; the other order left
  // the server's users imported and no key pinned, and the device took a
  // hello from another server (crash probe).
  if (target.identity.serverKey === undefined)
    await target.identity.pinServer(contents.serverKey, undefined)
  const result = await target.replica.write((ctx) => {
    const current = ctx.policies()
    for (const [field, entry] of Object.entries(contents.policies)) {
      const held = current.get(field)
      if (laterPolicy(held, entry) !== held) ctx.setImportedPolicy(field, entry)
    }
    let imported = 0
    for (const [id, entry] of contents.users) {
      const held = ctx.replicaOf(id).server
      // An older file (or one already imported) changes nothing.
      if (laterServerEntry(held, entry) === held) continue
      ctx.setImported(id, entry)
      imported++
    }
    const policies = ctx.policies()
    for (const [id] of contents.users)
      target.overrides.record(ctx, target.self, id, ctx.replicaOf(id), policies)
    ctx.event({
      type: 'users-imported',
      deviceId: target.self,
      message: `${imported} of ${contents.users.length} users from an export of ${new Date(contents.createdAt).toISOString()}`,
    })
    return { imported, unchanged: contents.users.length - imported, expiresAt: contents.expiresAt }
  })
  return result
}
