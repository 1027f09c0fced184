/**
 * PINs are stored hashed (SEMANTICS: `pin (stored hashed)`), and a roster
 * travels: every device holds a copy, an export holds one. A PIN has 4 to
 * 12 digits, so whatever the hash, guessing is cheap per try; two things
 * make a stolen copy worth little (ARCHITECTURE.md, "Where trust is
 * checked"):
 *
 * - A **pepper** from the site key: the PIN is keyed with HMAC-SHA256
 *   under a key derived from the site key before it is hashed, so a roster
 *   copy or an export without the site key cannot be attacked offline at
 *   all. Every device holds the site key (it joins with it), so a device
 *   still verifies a PIN offline. An open site (no site key) has none.
 * - A slow, memory-hard **scrypt** (`limits.pinKdf*`), so that with the
 *   site key too every guess costs milliseconds of CPU and megabytes of
 *   memory, not nanoseconds.
 *
 * Stored format: `scrypt$ln=<log2 N>,r=<r>,p=<p>[,k=<pepper id>]$<salt
 * hex>$<digest hex>`; the pepper id (8 hex digits) names the site key's
 * pepper, so a verifier with another key (or none) is told, not merely
 * denied. The old `sha256$<salt hex>$<digest hex>` (one salted SHA-256)
 * still verifies; it is replaced by the new format whenever the PIN is
 * set again (`pinHashOutdated` tells which are old).
 *
 * Enrolment hashes off the main thread (node:crypto's `scrypt` runs on the
 * libuv pool) and at most `limits.pinHashesInFlightMax` at once, so that a
 * bulk put neither blocks the event loop nor takes every pool thread from
 * the store.
 */
import {
  createHash,
  createHmac,
  hkdfSync,
  randomBytes,
  scrypt,
  scryptSync,
  timingSafeEqual,
  type ScryptOptions,
} from 'node:crypto'
import { InvalidOptionsError } from '../core/errors.js'
import { limits } from '../core/limits.js'
import {
  isPinHash,
  PIN_HASH_PATTERN,
  PIN_PLAIN_PATTERN,
  type ParsedRecord,
} from '../core/schema.js'

/** Bytes of a PIN hash's salt and digest. */
const SALT_BYTES = 16
const DIGEST_BYTES = 32

/** The pepper of a site: its key and its id (recorded in every hash). */
interface Pepper {
  readonly key: Buffer
  readonly id: string
}

const peppers = new Map<string, Pepper>()

/** The pepper derived from `siteKey` (HKDF-SHA256), memoised. */
function pepperOf(siteKey: string): Pepper {
  let pepper = peppers.get(siteKey)
  if (pepper === undefined) {
    const key = Buffer.from(
      hkdfSync('sha256', siteKey, 'rostersync', 'rostersync pin pepper v1', 32),
    )
    const id = createHmac('sha256', key).update('pepper id').digest('hex').slice(0, 8)
    pepper = { key, id }
    // A process knows one or two site keys; the bound is for form's sake.
    if (peppers.size >= 16) peppers.clear()
    peppers.set(siteKey, pepper)
  }
  return pepper
}

/** What scrypt is given for `pin`: the PIN itself, or its HMAC under the pepper. */
function secretOf(pin: string, pepper: Pepper | undefined): Buffer {
  return pepper === undefined
    ? Buffer.from(pin, 'utf8')
    : createHmac('sha256', pepper.key).update(pin, 'utf8').digest()
}

interface KdfParams {
  readonly logN: number
  readonly r: number
  readonly p: number
}

const CURRENT: KdfParams = {
  logN: limits.pinKdfLogN,
  r: limits.pinKdfBlockSize,
  p: limits.pinKdfParallelism,
}

function scryptOptions({ logN, r, p }: KdfParams): ScryptOptions {
  // Node's default maxmem (32 MiB) is below the largest cost a hash may name.
  return { N: 2 ** logN, r, p, maxmem: 128 * 2 ** logN * r * p + 1024 * 1024 }
}

function format(
  params: KdfParams,
  pepper: Pepper | undefined,
  salt: Buffer,
  digest: Buffer,
): string {
  const k = pepper === undefined ? '' : `,k=${pepper.id}`
  return `scrypt$ln=${params.logN},r=${params.r},p=${params.p}${k}$${salt.toString('hex')}$${digest.toString('hex')}`
}

/**
 * Hashes a plain PIN (synchronously: a one-off; enrolment uses
 * {@link hashPinAsync}). With `siteKey`, peppered with it.
 */
export function hashPin(
  pin: string,
  siteKey?: string,
  salt: Uint8Array = randomBytes(SALT_BYTES),
): string {
  const pepper = siteKey === undefined ? undefined : pepperOf(siteKey)
  const s = Buffer.from(salt)
  const digest = scryptSync(secretOf(pin, pepper), s, DIGEST_BYTES, scryptOptions(CURRENT))
  return format(CURRENT, pepper, s, digest)
}

/** Hashes waiting for a place (see {@link hashPinAsync}). */
const waiting: Array<() => void> = []
let inFlight = 0

/**
 * Hashes a plain PIN on the libuv pool, at most
 * `limits.pinHashesInFlightMax` at once in the process (the rest wait in
 * order), so that 1,000 PINs put at once leave the store its threads.
 */
export async function hashPinAsync(pin: string, siteKey?: string): Promise<string> {
  if (inFlight >= limits.pinHashesInFlightMax)
    await new Promise<void>((resolve) => waiting.push(resolve))
  inFlight++
  try {
    const pepper = siteKey === undefined ? undefined : pepperOf(siteKey)
    const salt = randomBytes(SALT_BYTES)
    const digest = await new Promise<Buffer>((resolve, reject) =>
      scrypt(secretOf(pin, pepper), salt, DIGEST_BYTES, scryptOptions(CURRENT), (error, key) =>
        error === null ? resolve(key) : reject(error),
      ),
    )
    return format(CURRENT, pepper, salt, digest)
  } finally {
    inFlight--
    waiting.shift()?.()
  }
}

/** A stored hash, parsed. */
type Parsed =
  | { readonly kind: 'sha256'; readonly salt: Buffer; readonly digest: Buffer }
  | {
      readonly kind: 'scrypt'
      readonly params: KdfParams
      readonly pepperId: string | undefined
      readonly salt: Buffer
      readonly digest: Buffer
    }

function parse(stored: string): Parsed | undefined {
  if (!isPinHash(stored)) return undefined
  const parts = stored.split('$')
  const salt = Buffer.from(parts[parts.length - 2] ?? '', 'hex')
  const digest = Buffer.from(parts[parts.length - 1] ?? '', 'hex')
  if (parts[0] === 'sha256') return { kind: 'sha256', salt, digest }
  const fields = new Map((parts[1] ?? '').split(',').map((kv) => kv.split('=') as [string, string]))
  return {
    kind: 'scrypt',
    params: {
      logN: Number(fields.get('ln')),
      r: Number(fields.get('r')),
      p: Number(fields.get('p')),
    },
    pepperId: fields.get('k'),
    salt,
    digest,
  }
}

/**
 * True when `pin` matches a stored hash (either format). A hash peppered
 * with a site key needs that key: without it, or with another site's,
 * this throws `INVALID_OPTIONS` rather than answer false for every PIN.
 * Synchronous: one check costs one scrypt (`limits.pinKdf*`, a few ms).
 */
export function verifyPin(pin: string, stored: string, siteKey?: string): boolean {
  const parsed = parse(stored)
  if (parsed === undefined) return false
  if (parsed.kind === 'sha256') {
    const actual = createHash('sha256').update(parsed.salt).update(pin, 'utf8').digest()
    return timingSafeEqual(parsed.digest, actual)
  }
  let pepper: Pepper | undefined
  if (parsed.pepperId !== undefined) {
    if (siteKey === undefined)
      throw new InvalidOptionsError(
        'verifyPin: this PIN hash is peppered with the site key; pass the site key',
      )
    pepper = pepperOf(siteKey)
    if (pepper.id !== parsed.pepperId)
      throw new InvalidOptionsError("verifyPin: this PIN hash is peppered with another site's key")
  }
  const actual = scryptSync(
    secretOf(pin, pepper),
    parsed.salt,
    DIGEST_BYTES,
    scryptOptions(parsed.params),
  )
  return timingSafeEqual(parsed.digest, actual)
}

/**
 * True when a stored hash is of an older kind than what is written now
 * (the `sha256$` format, lower scrypt parameters, or no pepper where the
 * site now has a key): setting the PIN again (`users.patch(id, { pin })`
 * with the plain PIN, e.g. right after it verified) stores the current one.
 */
export function pinHashOutdated(stored: string, siteKey?: string): boolean {
  const parsed = parse(stored)
  if (parsed?.kind !== 'scrypt') return true
  const { logN, r, p } = parsed.params
  if (logN < CURRENT.logN || r !== CURRENT.r || p < CURRENT.p) return true
  return siteKey !== undefined && parsed.pepperId !== pepperOf(siteKey).id
}

/**
 * The `prepare` of a peer's users API: a record whose PIN is plain gets a
 * promise of the record with the PIN hashed (peppered with `siteKey` when
 * the site has one); any other record comes back as it is, at once.
 */
export function pinHasher(
  siteKey: string | undefined,
): (record: ParsedRecord) => ParsedRecord | Promise<ParsedRecord> {
  return (record) => {
    const pin = record.fields.pin
    if (typeof pin !== 'string' || !PIN_PLAIN_PATTERN.test(pin)) return record
    return hashPinAsync(pin, siteKey).then((hashed) => ({
      id: record.id,
      fields: { ...record.fields, pin: hashed },
    }))
  }
}

export { PIN_HASH_PATTERN }
