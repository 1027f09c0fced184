/**
 * `server.exportUsers` (SEMANTICS.md, "Export / import"): the chosen users'
 * server entries, found by id or by group, in a signed file encrypted under
 * the site key (by default), a passphrase the operator gives or one the
 * server generates on request, which a device whose sync is stopped can
 * import (`core/export-file.ts`).
 */
import { z } from 'zod'
import type { Clock } from '../core/clock.js'
import type { PolicyEntry, ServerEntry } from '../core/entries.js'
import {
  ExportTooLargeError,
  GroupNotFoundError,
  InvalidOptionsError,
  UserNotFoundError,
} from '../core/errors.js'
import {
  checkPassphrase,
  encodeExportFile,
  exportKeySource,
  generatePassphrase,
  type ExportKeySource,
} from '../core/export-file.js'
import type { UserId } from '../core/ids.js'
import { limits } from '../core/limits.js'
import type { RecordSchema } from '../core/schema.js'
import type { KeyPair } from '../core/signing.js'
import type { Replica } from '../peers/replica.js'

/** What to export: users by id, users by group, or both (their union). */
export interface ExportRequest {
  readonly userIds?: readonly string[]
  readonly groupIds?: readonly string[]
  /**
   * The passphrase the file is encrypted under (at least
   * `limits.exportPassphraseCharsMin` characters). When absent, the file
   * is encrypted under the site key, which every device of the site holds
   * (on an open site, under nothing secret: such a file is not
   * confidential).
   */
  readonly passphrase?: string
  /**
   * Have the server generate a passphrase (120 bits) and return it with
   * the file, once (`PreparedExport.passphrase`). Excludes `passphrase`.
   */
  readonly generatePassphrase?: boolean
}

/** A prepared export. */
export interface PreparedExport {
  /** The file to hand to `device.importUsers` (or `rostersync import`). */
  readonly file: Uint8Array
  /** Until when a device accepts it, ms since the epoch (the server's clock). */
  readonly expiresAt: number
  /** How many users it holds. */
  readonly users: number
  /**
   * What the file's key is drawn from: `site-key` (the default),
   * `passphrase` (given or generated), `none` (an open site without a
   * passphrase: the file is not confidential).
   */
  readonly keySource: ExportKeySource
  /**
   * The passphrase the server generated for it (`generatePassphrase`):
   * whoever imports the file needs it. Shown once, never stored or logged.
   */
  readonly passphrase?: string
}

/** The caps of one export (ServerOptions.exportUsersMax / exportGroupsMax). */
export interface ExportCaps {
  readonly usersMax: number
  readonly groupsMax: number
}

/** What the export needs of the server. */
export interface ExportSource {
  readonly replica: Replica
  readonly schema: RecordSchema
  readonly clock: Clock
  readonly key: KeyPair
  readonly siteKey: string | undefined
  readonly caps: ExportCaps
  /** log2 of scrypt's N (`limits.exportKdfLogN` by default). */
  readonly kdfLogN?: number
}

// Ids are bounded here so that a huge request is refused before any work.
const idList = z
  .array(z.string().min(1).max(limits.userIdCharsMax))
  .max(limits.usersPerExportHardMax)
const requestSchema = z.strictObject({
  userIds: idList.optional(),
  groupIds: idList.optional(),
  passphrase: z.unknown().optional(),
  generatePassphrase: z.boolean().optional(),
})

/** Parses an export request (library or HTTP body); `INVALID_OPTIONS` when it is not one. */
export function parseExportRequest(input: unknown): ExportRequest {
  const parsed = requestSchema.safeParse(input)
  if (!parsed.success)
    throw new InvalidOptionsError(
      `exportUsers: ${z.prettifyError(parsed.error).slice(0, 300)}`,
      parsed.error.issues,
    )
  const { userIds, groupIds, passphrase, generatePassphrase: generate } = parsed.data
  if ((userIds ?? []).length === 0 && (groupIds ?? []).length === 0)
    throw new InvalidOptionsError(
      'exportUsers: name the users (userIds) or groups (groupIds) to export',
    )
  if (generate === true && passphrase !== undefined)
    throw new InvalidOptionsError(
      'exportUsers: give a passphrase or ask for one to be generated (generatePassphrase), not both',
    )
  return {
    ...(userIds === undefined ? {} : { userIds }),
    ...(groupIds === undefined ? {} : { groupIds }),
    // Checked before any work (EXPORT_PASSPHRASE_INVALID).
    ...(passphrase === undefined ? {} : { passphrase: checkPassphrase(passphrase) }),
    ...(generate === true ? { generatePassphrase: true } : {}),
  }
}

/**
 * Prepares an export: every named user must be live on the server
 * (`USER_NOT_FOUND` otherwise) and every named group must have a live
 * member (`GROUP_NOT_FOUND`), the union with the groups' members must
 * stay within the caps (`EXPORT_TOO_LARGE`), and a passphrase given must
 * be one (`EXPORT_PASSPHRASE_INVALID`). Without a passphrase the file is
 * encrypted under the site key (key source `site-key`), or, on an open
 * site, under nothing secret (`none`). Reads only; changes nothing. The
 * users are read at once; the key derivation (scrypt) then runs off the
 * event loop.
 */
export async function prepareExport(source: ExportSource, input: unknown): Promise<PreparedExport> {
  const request = parseExportRequest(input)
  const { replica, caps } = source
  const groupIds = [...new Set(request.groupIds ?? [])]
  if (groupIds.length > caps.groupsMax)
    throw new ExportTooLargeError('groups', groupIds.length, caps.groupsMax)
  // Too many ids is told before any of them is looked up: a list of 600
  // names is refused as too large whether or not its first one exists.
  const named = new Set<UserId>()
  for (const raw of new Set(request.userIds ?? [])) {
    named.add(source.schema.parseUserId(raw, true))
    if (named.size > caps.usersMax)
      throw new ExportTooLargeError('users', named.size, caps.usersMax, true)
  }
  const chosen = new Map<UserId, ServerEntry>()
  for (const id of named) {
    const entry = replica.replicaOf(id).server
    if (entry === undefined || entry.d === 1) throw new UserNotFoundError(id)
    chosen.set(id, entry)
  }
  if (groupIds.length > 0) {
    const wanted = new Set(groupIds)
    // Each group named must have a member (`GROUP_NOT_FOUND`), as each
    // user named must exist: a typo in a group gives an error, not a file
    // of nobody.
    const unmet = new Set(groupIds)
    for (const id of replica.allUserIds()) {
      const entry = replica.replicaOf(id).server
      const groups = entry?.f?.groups
      if (entry === undefined || entry.d === 1 || !Array.isArray(groups)) continue
      const members = groups.filter((g): g is string => typeof g === 'string' && wanted.has(g))
      if (members.length === 0) continue
      for (const g of members) unmet.delete(g)
      if (chosen.has(id)) continue
      chosen.set(id, entry)
      if (chosen.size > caps.usersMax)
        // Counting stops here: "501" read as the group's size (it had 521).
        throw new ExportTooLargeError(
          'users (with the groups named)',
          chosen.size,
          caps.usersMax,
          true,
        )
    }
    for (const g of unmet) throw new GroupNotFoundError(g)
  }
  const policies: Record<string, PolicyEntry> = {}
  for (const [field, entry] of replica.policies()) policies[field] = entry
  const createdAt = source.clock.now()
  const expiresAt = createdAt + limits.exportTtlMs
  const users = [...chosen].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
  const generated = request.generatePassphrase === true ? generatePassphrase() : undefined
  const passphrase = request.passphrase ?? generated
  const file = await encodeExportFile(
    { serverKey: source.key.publicKey, createdAt, expiresAt, policies, users },
    source.key,
    source.siteKey,
    {
      passphrase,
      ...(source.kdfLogN === undefined ? {} : { kdfLogN: source.kdfLogN }),
    },
  )
  if (file.byteLength > limits.exportFileBytesMax)
    throw new ExportTooLargeError('bytes', file.byteLength, limits.exportFileBytesMax)
  return {
    file,
    expiresAt,
    users: users.length,
    keySource: exportKeySource(passphrase, source.siteKey),
    ...(generated === undefined ? {} : { passphrase: generated }),
  }
}
