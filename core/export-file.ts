/**
 * The export file (PROTOCOL.md, "Export file"): chosen users' server
 * entries, with their stamps and epochs, and the field policies, encrypted
 * (AES-256-GCM) under a key drawn from the site key (HKDF) or from a
 * passphrase the operator gave (scrypt; the file's signed key source says which),
 * signed by the server's Ed25519 key for its site and authenticated with
 * the site key, valid for `limits.exportTtlMs`. A
 * device that imports it holds the same server entries a sync would bring,
 * so its later sync with the server neither conflicts nor duplicates
 * anything.
 *
 * The body is encrypted because it carries personal data and secrets:
 * card numbers, biometric templates and PIN hashes. A PIN of 4 to 12
 * digits hashed with salted SHA-256 (how the roster stores it, and how
 * devices check it) is found from its hash in microseconds; a stolen file
 * must not give that away. Without its secret (the site key or the
 * passphrase) a file tells only whose it is (the server's key), its key
 * source, its key derivation's parameters and its size. On an open site (no site
 * key) without a passphrase there is no secret: the key is derived from
 * the server's public key and the file is not confidential.
 *
 * Pure: the clock's time, the keys, the secrets and the schema come in;
 * `node:crypto` only (scrypt runs on libuv's thread pool, not the event
 * loop).
 */
import {
  createCipheriv,
  createDecipheriv,
  createHmac,
  hkdfSync,
  randomBytes,
  scrypt,
  timingSafeEqual,
} from 'node:crypto'
import * as decoding from 'lib0/decoding'
import * as encoding from 'lib0/encoding'
import { z } from 'zod'
import { decodeValue, encodeValue } from './codec.js'
import {
  ADOPTION_LEVELS_MAX,
  FIELD_POLICIES,
  WRITER_ID_PATTERN,
  type FieldPolicy,
  type PolicyEntry,
  type ServerEntry,
} from './entries.js'
import {
  AuthFailedError,
  ExportExpiredError,
  ExportFormatError,
  ExportPassphraseError,
  ExportSiteKeyRequiredError,
  ExportTooLargeError,
  InvalidRecordError,
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
 * The format this code writes and reads. Version 3 encrypts the body
 * (under the site key, a passphrase, or nothing secret); version 2 (the
 * server's key in the header, the body in the clear) and older are
 * refused (`EXPORT_FORMAT_UNSUPPORTED`).
 */
export const EXPORT_FORMAT_VERSION = 3
/** Domain separator of the signature, the MAC and the cipher's associated data. */
const DOMAIN = 'rostersync/export/3'
const MAC_BYTES = 32
/**
 * Where the file's key comes from (the header says, and the signature
 * covers it): `passphrase` (scrypt of the operator's passphrase),
 * `site-key` (HKDF of the site key with the file's salt; see
 * `SITE_KEY_KDF`), or `none` (an open site without a passphrase: HKDF of the
 * server's public key, which is no secret; such a file is not
 * confidential).
 */
export type ExportKeySource = 'passphrase' | 'site-key' | 'none'
/**
 * The key source's number in the header. 1 is the passphrase so that the
 * first format-3 files (whose header had 1 = scrypt of a passphrase there)
 * read the same.
 */
const KEY_SOURCE_IDS: Readonly<Record<ExportKeySource, number>> = {
  passphrase: 1,
  'site-key': 2,
  none: 3,
}
const keySourceOfId = (id: number): ExportKeySource | undefined =>
  (Object.keys(KEY_SOURCE_IDS) as ExportKeySource[]).find((s) => KEY_SOURCE_IDS[s] === id)
const SALT_BYTES = 16
const NONCE_BYTES = 12
const TAG_BYTES = 16
const AES_KEY_BYTES = 32
/** scrypt's block size and parallelism (OWASP: r = 8, p = 1); the cost N is `2^logN`. */
const SCRYPT_R = 8
const SCRYPT_P = 1

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

/** How the file's key is drawn from its secret by scrypt (in the clear, signed). */
interface KdfParams {
  readonly logN: number
  readonly r: number
  readonly p: number
  readonly salt: Uint8Array
}

/** The key the MAC is made with: HKDF-SHA256 of the site key, for this purpose only. */
function macKey(siteKey: string): Buffer {
  return Buffer.from(hkdfSync('sha256', siteKey, '', DOMAIN, MAC_BYTES))
}

/**
 * Checks an operator's passphrase (`EXPORT_PASSPHRASE_INVALID`) and
 * returns it in its one canonical form (Unicode NFC), so that the same
 * passphrase typed on another system opens the file.
 */
export function checkPassphrase(passphrase: unknown): string {
  if (typeof passphrase !== 'string' || passphrase.length === 0)
    throw new ExportPassphraseError(
      'an export passphrase is a non-empty string (passphrase; --passphrase-file or ROSTERSYNC_EXPORT_PASSPHRASE)',
    )
  const text = canonicalPassphrase(passphrase)
  // Characters as people count them (code points: an emoji is one, not the
  // two UTF-16 units `length` counts); spaces alone are no secret.
  const chars = [...text].length
  if (chars < limits.exportPassphraseCharsMin || text.trim() === '')
    throw new ExportPassphraseError(
      `an export passphrase has at least ${limits.exportPassphraseCharsMin} characters, not all spaces (this one has ${chars}); leave it out to encrypt under the site key, or have one generated`,
    )
  if (chars > limits.exportPassphraseCharsMax)
    throw new ExportPassphraseError(
      `an export passphrase has at most ${limits.exportPassphraseCharsMax} characters`,
    )
  // One with a line break could not be given back (a probe): a
  // --passphrase-file is read to its first line break.
  if (/\p{Cc}/u.test(text))
    throw new ExportPassphraseError(
      'an export passphrase holds no control characters (line breaks, tabs): --passphrase-file reads one line',
    )
  return text
}

/** Unambiguous letters and digits (Crockford's base 32): 5 bits each. */
const PASSPHRASE_ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ'

/** The shape of a generated passphrase, in either case. */
const GENERATED_SHAPE = /^[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){5}$/i

/**
 * A passphrase in its one canonical form: Unicode NFC, and a generated one
 * (`XXXX-XXXX-...`, Crockford's base 32, which reads either case as the
 * same) in capitals, so that an operator who types it in lower case opens
 * the file.
 */
function canonicalPassphrase(passphrase: string): string {
  const text = passphrase.normalize('NFC')
  return GENERATED_SHAPE.test(text) ? text.toUpperCase() : text
}

/** A random passphrase of 120 bits: six groups of four characters, `XXXX-XXXX-...`. */
export function generatePassphrase(random: (bytes: number) => Uint8Array = randomBytes): string {
  const bytes = random(24)
  const chars = [...bytes].map((b) => PASSPHRASE_ALPHABET[b & 31])
  const groups: string[] = []
  for (let i = 0; i < chars.length; i += 4) groups.push(chars.slice(i, i + 4).join(''))
  return groups.join('-')
}

/**
 * A site-key file's key derivation: HKDF-SHA256 of the site key with the
 * file's salt, no scrypt. The site key is a high-entropy secret wherever it
 * is used (the LAN's private-network key and the files' MAC are HKDF of
 * it too; one generated by the server is 192 random bits), so stretching it
 * adds nothing, and scrypt would cost every export and import 0.4-0.9 s.
 */
const SITE_KEY_KDF = { logN: 0, r: 0, p: 0 } as const

/**
 * The scrypt derivations of this process, one at a time. scrypt runs on
 * libuv's thread pool, which the store's writes share: 16 passphrase
 * exports at once held every thread, and a write waited 2.8 s instead of
 * 32 ms (an HTTP probe). `mostAtOnce` is for tests.
 */
export const derivations = {
  tail: Promise.resolve() as Promise<unknown>,
  running: 0,
  mostAtOnce: 0,
  /** Runs `derive` once every derivation before it has settled. */
  run<T>(derive: () => Promise<T>): Promise<T> {
    const turn = async (): Promise<T> => {
      this.mostAtOnce = Math.max(this.mostAtOnce, ++this.running)
      try {
        return await derive()
      } finally {
        this.running--
      }
    }
    const next = this.tail.then(turn, turn)
    this.tail = next.catch(() => undefined)
    return next
  },
}

/**
 * The file's AES key: scrypt of a passphrase (off the event loop, one at
 * a time: `derivations`), or HKDF of the site key (a `SITE_KEY_KDF` file).
 */
function deriveKey(source: ExportKeySource, secret: string, kdf: KdfParams): Promise<Buffer> {
  // By the signed key source, never by the parameters' values.
  if (source === 'site-key')
    return Promise.resolve(
      Buffer.from(hkdfSync('sha256', secret, kdf.salt, `${DOMAIN}/site-key`, AES_KEY_BYTES)),
    )
  return derivations.run(() => scryptKey(secret, kdf))
}

function scryptKey(secret: string, kdf: KdfParams): Promise<Buffer> {
  const N = 2 ** kdf.logN
  return new Promise((resolve, reject) => {
    scrypt(
      secret,
      kdf.salt,
      AES_KEY_BYTES,
      // scrypt needs 128 * N * r bytes (and a little more).
      { N, r: kdf.r, p: kdf.p, maxmem: 256 * N * kdf.r },
      (error, key) => (error === null ? resolve(key) : reject(error)),
    )
  })
}

/**
 * The key of a file whose key source is `none`: HKDF-SHA256 of the
 * server's public key. Nothing secret goes in: it keeps one code path for
 * every file, not confidentiality.
 */
function openKey(serverKey: Uint8Array): Buffer {
  return Buffer.from(hkdfSync('sha256', serverKey, '', `${DOMAIN}/none`, AES_KEY_BYTES))
}

/**
 * The header: what precedes the ciphertext (magic, version, server key,
 * key source, scrypt parameters for a passphrase, the salt unless the
 * source is `none`, nonce).
 */
function encodeHeader(
  serverKey: Uint8Array,
  source: ExportKeySource,
  kdf: KdfParams | undefined,
  nonce: Uint8Array,
): Uint8Array {
  const encoder = encoding.createEncoder()
  encoding.writeUint8Array(encoder, Buffer.from(EXPORT_MAGIC, 'ascii'))
  encoding.writeVarUint(encoder, EXPORT_FORMAT_VERSION)
  encoding.writeUint8Array(encoder, serverKey)
  encoding.writeVarUint(encoder, KEY_SOURCE_IDS[source])
  if (kdf !== undefined && source === 'passphrase') {
    encoding.writeVarUint(encoder, kdf.logN)
    encoding.writeVarUint(encoder, kdf.r)
    encoding.writeVarUint(encoder, kdf.p)
  }
  if (kdf !== undefined) encoding.writeUint8Array(encoder, kdf.salt)
  encoding.writeUint8Array(encoder, nonce)
  return encoding.toUint8Array(encoder)
}

/**
 * What is signed and MACed: the domain, the header, then the ciphertext
 * (encrypt, then sign: a reader checks whose file it is and that it is
 * whole before it spends scrypt's time and memory on it).
 */
function signedMessage(header: Uint8Array, ciphertext: Uint8Array): Uint8Array {
  return Buffer.concat([Buffer.from(`${DOMAIN}\u0000`), header, ciphertext])
}

/** The cipher's associated data: the domain and the header. */
const associatedData = (header: Uint8Array): Buffer =>
  Buffer.concat([Buffer.from(`${DOMAIN}\u0000`), header])

/** How an export is encrypted. */
export interface ExportEncryption {
  /**
   * The operator's passphrase (checked by `checkPassphrase`). Without one
   * the file is encrypted under the site key, or, on an open site, under
   * nothing secret (key source `none`).
   */
  readonly passphrase?: string | undefined
  /** log2 of scrypt's N (`limits.exportKdfLogN` by default). */
  readonly kdfLogN?: number
  /** Random bytes (salt, nonce); `node:crypto`'s by default. */
  readonly random?: (bytes: number) => Uint8Array
}

/** The key source an export gets: the passphrase if given, else the site key if any, else none. */
export function exportKeySource(
  passphrase: string | undefined,
  siteKey: string | undefined,
): ExportKeySource {
  return passphrase !== undefined ? 'passphrase' : siteKey !== undefined ? 'site-key' : 'none'
}

/**
 * Encodes, encrypts and signs an export. `siteKey` (absent on an open
 * site) adds the MAC that lets a device check the file is its site's, and
 * is the secret the body is encrypted under when no passphrase is given.
 */
export async function encodeExportFile(
  contents: ExportContents,
  key: KeyPair,
  siteKey: string | undefined,
  encryption: ExportEncryption,
): Promise<Uint8Array> {
  const source = exportKeySource(encryption.passphrase, siteKey)
  const secret =
    source === 'passphrase'
      ? checkPassphrase(encryption.passphrase)
      : source === 'site-key'
        ? siteKey
        : undefined
  const random = encryption.random ?? randomBytes
  const logN = encryption.kdfLogN ?? limits.exportKdfLogN
  if (!Number.isInteger(logN) || logN < limits.exportKdfLogNMin || logN > limits.exportKdfLogNMax)
    throw new RangeError(
      `exportKdfLogN must be an integer in [${limits.exportKdfLogNMin}, ${limits.exportKdfLogNMax}]`,
    )
  const body = encodeValue({
    serverKey: contents.serverKey,
    createdAt: contents.createdAt,
    expiresAt: contents.expiresAt,
    policies: contents.policies,
    users: contents.users.map(([id, entry]) => [id, entry]),
  })
  const kdf: KdfParams | undefined =
    secret === undefined
      ? undefined
      : source === 'site-key'
        ? { ...SITE_KEY_KDF, salt: random(SALT_BYTES) }
        : { logN, r: SCRYPT_R, p: SCRYPT_P, salt: random(SALT_BYTES) }
  const nonce = random(NONCE_BYTES)
  const header = encodeHeader(contents.serverKey, source, kdf, nonce)
  const aesKey =
    secret === undefined || kdf === undefined
      ? openKey(contents.serverKey)
      : await deriveKey(source, secret, kdf)
  const cipher = createCipheriv('aes-256-gcm', aesKey, nonce)
  cipher.setAAD(associatedData(header))
  const ciphertext = Buffer.concat([cipher.update(body), cipher.final(), cipher.getAuthTag()])
  const message = signedMessage(header, ciphertext)
  const encoder = encoding.createEncoder()
  encoding.writeUint8Array(encoder, header)
  encoding.writeVarUint8Array(encoder, ciphertext)
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
  /** The site key the device was configured with, if any (it opens a file of key source `site-key`). */
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
  /**
   * The passphrase the file was encrypted with, as the operator gave it
   * (needed only for a file of key source `passphrase`).
   */
  readonly passphrase: string | undefined
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
  a: z
    .record(
      z.string(),
      z
        .array(z.tuple([stamp, z.string().max(200), stamp]))
        .min(1)
        .max(ADOPTION_LEVELS_MAX),
    )
    .optional(),
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
  source: ExportKeySource
  kdf: KdfParams | undefined
  header: Uint8Array
  ciphertext: Uint8Array
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
      throw new ExportFormatError(version, EXPORT_FORMAT_VERSION)
    const serverKey = decoding.readUint8Array(decoder, PUBLIC_KEY_BYTES)
    const sourceId = decoding.readVarUint(decoder)
    const source = keySourceOfId(sourceId)
    if (source === undefined)
      throw new MalformedMessageError(`the export file names an unknown key source (${sourceId})`)
    let kdf: KdfParams | undefined
    if (source === 'passphrase') {
      const logN = decoding.readVarUint(decoder)
      const r = decoding.readVarUint(decoder)
      const p = decoding.readVarUint(decoder)
      kdf = { logN, r, p, salt: decoding.readUint8Array(decoder, SALT_BYTES) }
    } else if (source === 'site-key') {
      kdf = { ...SITE_KEY_KDF, salt: decoding.readUint8Array(decoder, SALT_BYTES) }
    }
    decoding.readUint8Array(decoder, NONCE_BYTES)
    const header = bytes.subarray(0, decoder.pos)
    const ciphertext = decoding.readVarUint8Array(decoder)
    const signature = decoding.readVarUint8Array(decoder)
    const mac = decoding.readVarUint8Array(decoder)
    if (decoding.hasContent(decoder)) throw new MalformedMessageError('trailing bytes')
    return { serverKey, source, kdf, header, ciphertext, signature, mac }
  } catch (error) {
    if (error instanceof RostersyncError) throw error
    throw new MalformedMessageError('the export file is truncated or corrupt', error)
  }
}

/**
 * Bounds on what the file asks of scrypt (signed by the server, but a
 * device does not spend more than `exportKdfLogNMax` allows on anyone's
 * say, nor accept less than `exportKdfLogNMin`).
 */
function checkKdf(kdf: KdfParams): void {
  if (
    kdf.logN < limits.exportKdfLogNMin ||
    kdf.logN > limits.exportKdfLogNMax ||
    kdf.r !== SCRYPT_R ||
    kdf.p !== SCRYPT_P
  )
    throw new MalformedMessageError(
      `the export file asks for scrypt N=2^${kdf.logN}, r=${kdf.r}, p=${kdf.p}; this rostersync takes N from 2^${limits.exportKdfLogNMin} to 2^${limits.exportKdfLogNMax}, r=${SCRYPT_R}, p=${SCRYPT_P}`,
    )
}

/**
 * The secret a file's key is drawn from, as its key source says: the
 * passphrase (`EXPORT_PASSPHRASE_INVALID` when none is given), the
 * device's site key (`EXPORT_SITE_KEY_REQUIRED` when it has none), or
 * nothing (`none`). Checks scrypt's parameters first.
 */
function secretOf(
  source: ExportKeySource,
  kdf: KdfParams | undefined,
  check: ExportCheck,
): string | undefined {
  if (kdf !== undefined && source === 'passphrase') checkKdf(kdf)
  if (source === 'passphrase') {
    if (check.passphrase === undefined || check.passphrase.length === 0)
      throw new ExportPassphraseError(
        'the export file is encrypted under a passphrase: give the one it was exported with (passphrase; --passphrase-file or ROSTERSYNC_EXPORT_PASSPHRASE)',
      )
    return canonicalPassphrase(check.passphrase)
  }
  if (source === 'site-key') {
    if (check.siteKey === undefined) throw new ExportSiteKeyRequiredError()
    return check.siteKey
  }
  return undefined
}

/**
 * Decrypts the body. The signature and the site MAC held, so only the key
 * can be wrong: a wrong passphrase is `EXPORT_PASSPHRASE_INVALID`, a wrong
 * site key `AUTH_FAILED`.
 */
async function decryptBody(
  serverKey: Uint8Array,
  header: Uint8Array,
  source: ExportKeySource,
  kdf: KdfParams | undefined,
  ciphertext: Uint8Array,
  secret: string | undefined,
): Promise<Uint8Array> {
  if (ciphertext.byteLength < TAG_BYTES)
    throw new MalformedMessageError('the export file is truncated or corrupt')
  const nonce = header.subarray(header.byteLength - NONCE_BYTES)
  const key =
    secret === undefined || kdf === undefined
      ? openKey(serverKey)
      : await deriveKey(source, secret, kdf)
  const decipher = createDecipheriv('aes-256-gcm', key, nonce)
  decipher.setAAD(associatedData(header))
  decipher.setAuthTag(ciphertext.subarray(ciphertext.byteLength - TAG_BYTES))
  try {
    return Buffer.concat([
      decipher.update(ciphertext.subarray(0, ciphertext.byteLength - TAG_BYTES)),
      decipher.final(),
    ])
  } catch {
    // The signature verified: the ciphertext is the server's, whole. Only
    // the key can be wrong.
    if (source === 'passphrase')
      throw new ExportPassphraseError(
        'the passphrase does not open this export file (it is the one given when the file was exported)',
      )
    if (source === 'site-key') throw new AuthFailedError(FOREIGN_OR_DAMAGED)
    throw new MalformedMessageError('the export file is corrupt: its body does not decrypt')
  }
}

/**
 * Reads and checks an export file; rejects with a typed error and returns
 * nothing on any fault: `MESSAGE_TOO_LARGE` / `EXPORT_TOO_LARGE` (past the
 * limits), `EXPORT_FORMAT_UNSUPPORTED` (an older, unencrypted format, or a
 * newer one), `MALFORMED_MESSAGE` (not a file of this format, truncated,
 * altered: the signature does not verify), `AUTH_FAILED` (another site's,
 * or nothing to check the site with), `EXPORT_PASSPHRASE_INVALID` (a
 * passphrase file: no passphrase, or not the file's),
 * `EXPORT_SITE_KEY_REQUIRED` (a site-key file, and the device has no site
 * key), `EXPORT_EXPIRED`, `INVALID_RECORD` (a
 * record this site's schema refuses).
 */
export async function readExportFile(
  bytes: Uint8Array,
  check: ExportCheck,
): Promise<ExportContents> {
  if (bytes.byteLength > limits.exportFileBytesMax)
    throw new MessageTooLargeError('the export file', bytes.byteLength, limits.exportFileBytesMax)
  const { serverKey, source, kdf, header, ciphertext, signature, mac } = splitFile(bytes)
  const message = signedMessage(header, ciphertext)
  // Whose file it is, and that it is whole, before anything is decrypted:
  // a forged or bloated file costs a signature check, no scrypt.
  checkServer(serverKey, check)
  if (!verifyBytes(serverKey, message, signature))
    throw new MalformedMessageError('the export file is corrupt: its signature does not verify')
  // A site-key file always carries the MAC (its server has a site key):
  // without it a wrong site key would cost scrypt before it is found.
  if (source === 'site-key' && mac.byteLength === 0)
    throw new MalformedMessageError('the export file is corrupt: its site MAC is missing')
  checkSiteMac(message, mac, check)
  const secret = secretOf(source, kdf, check)
  const body = await decryptBody(serverKey, header, source, kdf, ciphertext, secret)
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
    // Stamps are judged by the file's own time too: the server signed it,
    // and a device whose clock is behind (a flat RTC battery) refused every
    // fresh file as holding "a stamp in the future" (a probe).
    policies: checkPolicies(file.policies, { ...check, now: Math.max(check.now, file.createdAt) }),
    users: checkUsers(file.users, { ...check, now: Math.max(check.now, file.createdAt) }),
  }
}

/**
 * Whose file it is. A device that pinned its server's key takes only files
 * of that key. One never admitted takes only a file of the key whose
 * fingerprint the operator gave (`serverKeyFingerprint`); the MAC under
 * the site key, when both have one, must verify too. The site key alone
 * proves nothing here: every device of the site holds it.
 */
/**
 * The site key does not check: the file is another site's, or damaged
 * where the signature does not cover it (one bit of the MAC: a probe was
 * sent after the wrong cause).
 */
const FOREIGN_OR_DAMAGED =
  "the export file does not check with this site's key: it was made for another site, or it is damaged (export it again)"

function checkServer(serverKey: Uint8Array, check: ExportCheck): void {
  const pinned = check.pinnedServerKey
  if (pinned !== undefined) {
    // A fingerprint given names the server the operator means: this device
    // trusts another one (it was ignored, and the import went through).
    const given = check.serverKeyFingerprint
    if (given !== undefined && given !== keyFingerprint(pinned))
      throw new AuthFailedError(
        `the key fingerprint given is not this device's server's (it trusts ${keyFingerprint(pinned)}): the file is meant for another site's devices`,
      )
    if (!Buffer.from(pinned).equals(Buffer.from(serverKey)))
      throw new AuthFailedError(
        "the export file names another server than this device's: it was made by another site's server, or it is damaged",
      )
  } else if (check.serverKeyFingerprint === undefined) {
    throw new AuthFailedError(
      "this device has never been admitted by its server, so it cannot tell the server's file from a forgery: give the server's key fingerprint (serverKeyFingerprint, --server-key; the server prints it)",
    )
  } else if (keyFingerprint(serverKey) !== check.serverKeyFingerprint) {
    throw new AuthFailedError(
      'the export file names another server than the key fingerprint given: it was made by another server, or it is damaged',
    )
  }
}

/** The MAC under the site key, when the file and the device both have one (after the signature: a corrupt file is MALFORMED_MESSAGE). */
function checkSiteMac(message: Uint8Array, mac: Uint8Array, check: ExportCheck): void {
  if (mac.byteLength > 0 && check.siteKey !== undefined) {
    const expected = createHmac('sha256', macKey(check.siteKey)).update(message).digest()
    if (mac.byteLength !== MAC_BYTES || !timingSafeEqual(expected, mac))
      throw new AuthFailedError(FOREIGN_OR_DAMAGED)
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
    const id = check.schema.parseUserId(rawId, true)
    if (seen.has(id)) throw new MalformedMessageError('the export file holds a user twice')
    seen.add(id)
    const adoptions = Object.values(raw.a ?? {}).flat()
    for (const value of [
      raw.t,
      ...Object.values(raw.s ?? {}),
      ...Object.values(raw.x ?? {}),
      ...adoptions.flatMap(([held, , takenAt]) => [held, takenAt]),
    ])
      checkStamp(value, check.now, `user ${id}`)
    if (adoptions.some(([, writer]) => !WRITER_ID_PATTERN.test(writer)))
      throw new MalformedMessageError('the export file names an invalid writer')
    const named = [raw.s, raw.x, raw.a].flatMap((map) => Object.keys(map ?? {}))
    for (const name of named)
      if (!check.schema.hasField(name))
        throw new MalformedMessageError('the export file stamps an unknown field')
    // The schema judges the values as it judges any write (INVALID_RECORD),
    // naming the user: among 10,000 the one refused was not to be found (a probe).
    if (raw.f !== undefined) {
      try {
        check.schema.parsePatch(id, raw.f)
      } catch (error) {
        if (!(error instanceof InvalidRecordError)) throw error
        throw new InvalidRecordError(
          `the export file's user ${JSON.stringify(id)}: ${error.message}`,
          error.details,
        )
      }
    }
    const entry: ServerEntry = {
      e: raw.e,
      t: raw.t,
      ...(raw.d === undefined ? {} : { d: 1 as const }),
      ...(raw.f === undefined ? {} : { f: raw.f as ServerEntry['f'] & object }),
      ...(raw.s === undefined ? {} : { s: raw.s }),
      ...(raw.x === undefined ? {} : { x: raw.x }),
      ...(raw.a === undefined ? {} : { a: raw.a }),
    }
    out.push([id, entry])
  }
  return out
}
