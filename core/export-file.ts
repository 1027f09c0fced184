/**
 * The export file (PROTOCOL.md, "Export file"): chosen users' server
 * entries, with their stamps and epochs, and the field policies, signed by
 * the server's Ed25519 key for its site and authenticated with the site key,
 * valid for `limits.exportTtlMs`. A device that imports it holds the same
 * server entries a sync would bring, so its later sync with the server
 * neither conflicts nor duplicates anything.
 *
 * Pure: the clock's time, the keys and the schema come in; `node:crypto`
 * only.
 */
import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto'
import * as decoding from 'lib0/decoding'
import * as encoding from 'lib0/encoding'
import { z } from 'zod'
import { decodeValue, encodeValue } from './codec.js'
import { FIELD_POLICIES, type FieldPolicy, type PolicyEntry, type ServerEntry } from './entries.js'
import {
  AuthFailedError,
  ExportExpiredError,
  ExportTooLargeError,
  MalformedMessageError,
  MessageTooLargeError,
  RostersyncError,
} from './errors.js'
import { stampMs } from './hlc.js'
import type { UserId } from './ids.js'
import { limits } from './limits.js'
import type { RecordSchema } from './schema.js'
import {
  keyFingerprint,
  PUBLIC_KEY_BYTES,
  signBytes,
  verifyBytes,
  type KeyPair,
} from './signing.js'

/** The first bytes of every export file. */
export const EXPORT_MAGIC = 'RSYNCEXP'
/**
 * The format this code writes and reads. Version 2 carries the server's key
 * in the header, so that a reader checks whose file it is and its
 * signature before it decodes anything of the body.
 */
export const EXPORT_FORMAT_VERSION = 2
/** Domain separator of the signature and the MAC (never valid for another purpose). */
const DOMAIN = 'rostersync/export/2'
const MAC_BYTES = 32

/** What an export file says. */
export interface ExportContents {
  /** The server's public key: the site's identity (PROTOCOL.md, "Signed writes"). */
  readonly serverKey: Uint8Array
  /** When the server prepared it, and until when it may be imported (ms, the server's clock). */
  readonly createdAt: number
  readonly expiresAt: number
  /** The server's field policies, as in its `m:server` map. */
  readonly policies: Readonly<Record<string, PolicyEntry>>
  /** The users' server entries, ordered by id. */
  readonly users: ReadonlyArray<readonly [UserId, ServerEntry]>
}

/** The key the MAC is made with: HKDF-SHA256 of the site key, for this purpose only. */
function macKey(siteKey: string): Buffer {
  return Buffer.from(hkdfSync('sha256', siteKey, '', DOMAIN, MAC_BYTES))
}

/** What is signed and MACed: the domain, the server's key, then the body. */
function signedMessage(serverKey: Uint8Array, body: Uint8Array): Uint8Array {
  return Buffer.concat([Buffer.from(`${DOMAIN}\u0000`), serverKey, body])
}

/**
 * Encodes and signs an export. `siteKey` (absent on an open site) adds the
 * MAC that lets a device never admitted yet check the file is its site's.
 */
export function encodeExportFile(
  contents: ExportContents,
  key: KeyPair,
  siteKey: string | undefined,
): Uint8Array {
  const body = encodeValue({
    serverKey: contents.serverKey,
    createdAt: contents.createdAt,
    expiresAt: contents.expiresAt,
    policies: contents.policies,
    users: contents.users.map(([id, entry]) => [id, entry]),
  })
  const message = signedMessage(contents.serverKey, body)
  const encoder = encoding.createEncoder()
  encoding.writeUint8Array(encoder, Buffer.from(EXPORT_MAGIC, 'ascii'))
  encoding.writeVarUint(encoder, EXPORT_FORMAT_VERSION)
  encoding.writeUint8Array(encoder, contents.serverKey)
  encoding.writeVarUint8Array(encoder, body)
  encoding.writeVarUint8Array(encoder, signBytes(key, message))
  encoding.writeVarUint8Array(
    encoder,
    siteKey === undefined
      ? new Uint8Array(0)
      : createHmac('sha256', macKey(siteKey)).update(message).digest(),
  )
  return encoding.toUint8Array(encoder)
}

/** What a device knows to check a file with. */
export interface ExportCheck {
  /** The device's clock, ms. */
  readonly now: number
  /** The server key the device pinned on its first admission, if any. */
  readonly pinnedServerKey: Uint8Array | undefined
  /** The site key the device was configured with, if any. */
  readonly siteKey: string | undefined
  /**
   * For a device that has never been admitted (no key pinned): the
   * fingerprint of its server's key (`keyFingerprint`, `SHA256:…`, which the
   * server prints), as the operator gave it. Without a pinned key or this,
   * no file is taken: the site key alone, which every device holds, would
   * let any of them forge the server's data.
   */
  readonly serverKeyFingerprint?: string | undefined
  readonly schema: RecordSchema
}

const stamp = z.number().int().nonnegative().refine(Number.isSafeInteger, 'a safe integer')
const stampMap = z.record(z.string(), stamp)
const serverEntrySchema = z.strictObject({
  e: stamp,
  t: stamp,
  d: z.literal(1).optional(),
  f: z.record(z.string(), z.unknown()).optional(),
  s: stampMap.optional(),
  x: stampMap.optional(),
})
const bodySchema = z.strictObject({
  serverKey: z.instanceof(Uint8Array).refine((k) => k.byteLength === PUBLIC_KEY_BYTES),
  createdAt: stamp,
  expiresAt: stamp,
  policies: z.record(
    z.string(),
    z.strictObject({ p: z.enum(FIELD_POLICIES as [FieldPolicy, ...FieldPolicy[]]), t: stamp }),
  ),
  users: z.array(z.tuple([z.string(), serverEntrySchema])),
})

/** The parts of a file, before any check of what they say. */
function splitFile(bytes: Uint8Array): {
  serverKey: Uint8Array
  body: Uint8Array
  signature: Uint8Array
  mac: Uint8Array
} {
  try {
    const decoder = decoding.createDecoder(bytes)
    const magic = Buffer.from(decoding.readUint8Array(decoder, EXPORT_MAGIC.length)).toString(
      'latin1',
    )
    if (magic !== EXPORT_MAGIC) throw new MalformedMessageError('not a rostersync export file')
    const version = decoding.readVarUint(decoder)
    if (version !== EXPORT_FORMAT_VERSION)
      throw new MalformedMessageError(
        `export format ${version} is not supported (this rostersync reads ${EXPORT_FORMAT_VERSION})`,
      )
    const serverKey = decoding.readUint8Array(decoder, PUBLIC_KEY_BYTES)
    const body = decoding.readVarUint8Array(decoder)
    const signature = decoding.readVarUint8Array(decoder)
    const mac = decoding.readVarUint8Array(decoder)
    if (decoding.hasContent(decoder)) throw new MalformedMessageError('trailing bytes')
    return { serverKey, body, signature, mac }
  } catch (error) {
    if (error instanceof RostersyncError) throw error
    throw new MalformedMessageError('the export file is truncated or corrupt', error)
  }
}

/**
 * Reads and checks an export file; throws a typed error and returns
 * nothing on any fault: `MESSAGE_TOO_LARGE` / `EXPORT_TOO_LARGE` (past the
 * limits), `MALFORMED_MESSAGE` (not a file of this format, truncated,
 * altered: the signature does not verify), `AUTH_FAILED` (another site's,
 * or nothing to check the site with), `EXPORT_EXPIRED`, `INVALID_RECORD`
 * (a record this site's schema refuses).
 */
export function readExportFile(bytes: Uint8Array, check: ExportCheck): ExportContents {
  if (bytes.byteLength > limits.exportFileBytesMax)
    throw new MessageTooLargeError('the export file', bytes.byteLength, limits.exportFileBytesMax)
  const { serverKey, body, signature, mac } = splitFile(bytes)
  const message = signedMessage(serverKey, body)
  // Whose file it is, and that it is whole, before anything of the body is
  // decoded: a forged or bloated file costs a signature check, no more.
  checkServer(serverKey, check)
  if (!verifyBytes(serverKey, message, signature))
    throw new MalformedMessageError('the export file is corrupt: its signature does not verify')
  checkSiteMac(message, mac, check)
  const parsed = bodySchema.safeParse(decodeValue(body))
  if (!parsed.success)
    throw new MalformedMessageError(
      `the export file's contents do not parse: ${parsed.error.message.slice(0, 200)}`,
    )
  const file = parsed.data
  if (!Buffer.from(file.serverKey).equals(Buffer.from(serverKey)))
    throw new MalformedMessageError('the export file names two server keys')
  if (check.now >= file.expiresAt) throw new ExportExpiredError(file.expiresAt, check.now)
  if (file.expiresAt - file.createdAt > limits.exportTtlMs || file.expiresAt < file.createdAt)
    throw new MalformedMessageError('the export file claims a validity longer than exports have')
  if (file.users.length > limits.usersPerExportHardMax)
    throw new ExportTooLargeError('users', file.users.length, limits.usersPerExportHardMax)
  return {
    serverKey: file.serverKey,
    createdAt: file.createdAt,
    expiresAt: file.expiresAt,
    policies: checkPolicies(file.policies, check),
    users: checkUsers(file.users, check),
  }
}

/**
 * Whose file it is. A device that pinned its server's key takes only files
 * of that key. One never admitted takes only a file of the key whose
 * fingerprint the operator gave (`serverKeyFingerprint`); the MAC under
 * the site key, when both have one, must verify too. The site key alone
 * proves nothing here: every device of the site holds it.
 */
function checkServer(serverKey: Uint8Array, check: ExportCheck): void {
  const pinned = check.pinnedServerKey
  if (pinned !== undefined) {
    if (!Buffer.from(pinned).equals(Buffer.from(serverKey)))
      throw new AuthFailedError("the export file was made by another site's server")
  } else if (check.serverKeyFingerprint === undefined) {
    throw new AuthFailedError(
      "this device has never been admitted by its server, so it cannot tell the server's file from a forgery: give the server's key fingerprint (serverKeyFingerprint, --server-key; the server prints it)",
    )
  } else if (keyFingerprint(serverKey) !== check.serverKeyFingerprint) {
    throw new AuthFailedError(
      'the export file was made by another server than the key fingerprint given names',
    )
  }
}

/** The MAC under the site key, when the file and the device both have one (after the signature: a corrupt file is MALFORMED_MESSAGE). */
function checkSiteMac(message: Uint8Array, mac: Uint8Array, check: ExportCheck): void {
  if (mac.byteLength > 0 && check.siteKey !== undefined) {
    const expected = createHmac('sha256', macKey(check.siteKey)).update(message).digest()
    if (mac.byteLength !== MAC_BYTES || !timingSafeEqual(expected, mac))
      throw new AuthFailedError('the export file was made for another site (site key)')
  }
}

function checkStamp(value: number, now: number, where: string): void {
  if (stampMs(value) > now + limits.stampSkewMsMax)
    throw new MalformedMessageError(`the export file holds a stamp in the future (${where})`)
}

function checkPolicies(
  policies: Record<string, { p: FieldPolicy; t: number }>,
  check: ExportCheck,
): Record<string, PolicyEntry> {
  const out: Record<string, PolicyEntry> = {}
  for (const [field, entry] of Object.entries(policies)) {
    if (!check.schema.hasField(field))
      throw new MalformedMessageError(`the export file sets a policy of an unknown field`)
    checkStamp(entry.t, check.now, `policy of ${field}`)
    out[field] = { p: entry.p, t: entry.t }
  }
  return out
}

function checkUsers(
  users: ReadonlyArray<[string, z.infer<typeof serverEntrySchema>]>,
  check: ExportCheck,
): Array<readonly [UserId, ServerEntry]> {
  const seen = new Set<string>()
  const out: Array<readonly [UserId, ServerEntry]> = []
  for (const [rawId, raw] of users) {
    const id = check.schema.parseUserId(rawId)
    if (seen.has(id)) throw new MalformedMessageError('the export file holds a user twice')
    seen.add(id)
    for (const value of [raw.t, ...Object.values(raw.s ?? {}), ...Object.values(raw.x ?? {})])
      checkStamp(value, check.now, `user ${id}`)
    for (const name of [...Object.keys(raw.s ?? {}), ...Object.keys(raw.x ?? {})])
      if (!check.schema.hasField(name))
        throw new MalformedMessageError('the export file stamps an unknown field')
    // The schema judges the values as it judges any write (INVALID_RECORD).
    if (raw.f !== undefined) check.schema.parsePatch(id, raw.f)
    const entry: ServerEntry = {
      e: raw.e,
      t: raw.t,
      ...(raw.d === undefined ? {} : { d: 1 as const }),
      ...(raw.f === undefined ? {} : { f: raw.f as ServerEntry['f'] & object }),
      ...(raw.s === undefined ? {} : { s: raw.s }),
      ...(raw.x === undefined ? {} : { x: raw.x }),
    }
    out.push([id, entry])
  }
  return out
}
