/**
 * Signed writes: the cryptographic primitives (PROTOCOL.md, "Signed writes").
 *
 * Every writer (the server, each device) holds an Ed25519 key pair. What a
 * writer authors travels in an envelope (writer id, the Yjs clientID nonces
 * it writes under, the update bytes, a signature over all of it and the
 * site), so any peer can relay an envelope unchanged and every receiver can
 * verify it: the signature against the writer's key, and each Yjs clientID
 * of the update against the writer's key (a clientID is derived from the key,
 * so no writer can squat another's clientIDs).
 *
 * A device's key reaches other devices in a certificate the server signs
 * when it admits the device: a LAN peer that has the server's key (pinned at
 * its first full sync) can then check a device it has never met.
 *
 * Pure computation over `node:crypto` (Ed25519 signatures are
 * deterministic): no I/O, clock or randomness of its own. Key seeds come in.
 */
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  sign as edSign,
  verify as edVerify,
  type KeyObject,
} from 'node:crypto'
import * as decoding from 'lib0/decoding'
import * as encoding from 'lib0/encoding'
import { CertificateExpiredError, MalformedMessageError, SignatureInvalidError } from './errors.js'
import { limits } from './limits.js'
import { joinBytes } from './protocol.js'

/** Bytes of an Ed25519 seed, public key and signature. */
export const SEED_BYTES = 32
export const PUBLIC_KEY_BYTES = 32
export const SIGNATURE_BYTES = 64

/**
 * Derived clientIDs live in [2^32, 2^53): above every clientID Yjs mints
 * itself (a random uint32, what an unmodified y-websocket client uses), so a
 * derived and a random clientID never meet.
 */
export const DERIVED_CLIENT_ID_MIN = 2 ** 32
const DERIVED_CLIENT_ID_SPAN = 2 ** 53 - DERIVED_CLIENT_ID_MIN

/** Domain separators: a signature made for one purpose never verifies for another. */
const DOMAIN = {
  envelope: 'rostersync/envelope/1',
  /** An envelope of a site past its first generation: the generation's id is signed too. */
  envelopeOfGeneration: 'rostersync/envelope-generation/1',
  certificate: 'rostersync/certificate/2',
  lanAuth: 'rostersync/lan-auth/1',
  join: 'rostersync/join/1',
  clientId: 'rostersync/client-id/1',
} as const

/** A writer's key pair, ready to sign. */
export interface KeyPair {
  /** The raw 32-byte public key. */
  readonly publicKey: Uint8Array
  readonly privateKey: KeyObject
}

// PKCS#8 and SPKI wrappings of a raw Ed25519 key (RFC 8410): node:crypto
// imports keys only in a container format.
const PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex')
export const SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex')

/** The key pair of a 32-byte seed (the seed is the private key; keep it secret). */
export function keyPairFromSeed(seed: Uint8Array): KeyPair {
  if (seed.byteLength !== SEED_BYTES) throw new TypeError(`an Ed25519 seed is ${SEED_BYTES} bytes`)
  const privateKey = createPrivateKey({
    key: Buffer.concat([PKCS8_PREFIX, seed]),
    format: 'der',
    type: 'pkcs8',
  })
  const spki = createPublicKey(privateKey).export({ format: 'der', type: 'spki' })
  return { privateKey, publicKey: new Uint8Array(spki.subarray(SPKI_PREFIX.length)) }
}

/**
 * Public keys parsed once: verification runs per update, and parsing a key
 * costs about as much as a verification. Bounded: the oldest parse is
 * dropped first.
 */
const publicKeys = new Map<string, KeyObject>()
/** A key's id in the caches: its base64, read in place (no copy). */
const keyId = (publicKey: Uint8Array): string =>
  Buffer.from(publicKey.buffer, publicKey.byteOffset, publicKey.byteLength).toString('base64')

function publicKeyObject(publicKey: Uint8Array): KeyObject {
  const id = keyId(publicKey)
  let key = publicKeys.get(id)
  if (key === undefined) {
    if (publicKey.byteLength !== PUBLIC_KEY_BYTES)
      throw new SignatureInvalidError(`a public key is ${PUBLIC_KEY_BYTES} bytes`)
    if (hasSmallOrder(publicKey))
      throw new SignatureInvalidError(
        'a public key of small order is refused (anyone can sign for it)',
      )
    key = createPublicKey({
      key: Buffer.concat([SPKI_PREFIX, publicKey]),
      format: 'der',
      type: 'spki',
    })
    if (publicKeys.size >= limits.publicKeysCachedMax) {
      const oldest = publicKeys.keys().next().value
      if (oldest !== undefined) publicKeys.delete(oldest)
    }
    publicKeys.set(id, key)
  }
  return key
}

const FIELD_P = 2n ** 255n - 19n
const X25519_SPKI_PREFIX = Buffer.from('302a300506032b656e032100', 'hex')
const X25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex')
/** A fixed X25519 key: the small-order test needs a scalar, not a secret. */
const PROBE_KEY = createPrivateKey({
  key: Buffer.concat([X25519_PKCS8_PREFIX, Buffer.alloc(32, 0x5a)]),
  format: 'der',
  type: 'pkcs8',
})

function modPow(base: bigint, exponent: bigint): bigint {
  let result = 1n
  let b = base % FIELD_P
  for (let e = exponent; e > 0n; e >>= 1n) {
    if ((e & 1n) === 1n) result = (result * b) % FIELD_P
    b = (b * b) % FIELD_P
  }
  return result
}

/**
 * True for an Ed25519 public key of small order (the identity, and the
 * points of order 2, 4 and 8): a signature for it verifies for many
 * messages without any secret (an all-zero key and signature verified a
 * quarter of join proofs in a review). The point's Montgomery form,
 * u = (1 + y) / (1 - y), is used as an X25519 public key: a clamped scalar
 * is a multiple of 8, so a small-order point gives the all-zero shared
 * secret, which OpenSSL refuses to derive.
 */
export function hasSmallOrder(publicKey: Uint8Array): boolean {
  const bytes = Buffer.from(publicKey)
  bytes[31] = (bytes[31] as number) & 0x7f
  let y = 0n
  for (let i = 31; i >= 0; i--) y = (y << 8n) | BigInt(bytes[i] as number)
  y %= FIELD_P
  const u = ((1n + y) * modPow((1n - y + FIELD_P) % FIELD_P, FIELD_P - 2n)) % FIELD_P
  const encoded = Buffer.alloc(32)
  let rest = u
  for (let i = 0; i < 32; i++) {
    encoded[i] = Number(rest & 0xffn)
    rest >>= 8n
  }
  try {
    const shared = diffieHellman({
      privateKey: PROBE_KEY,
      publicKey: createPublicKey({
        key: Buffer.concat([X25519_SPKI_PREFIX, encoded]),
        format: 'der',
        type: 'spki',
      }),
    })
    return shared.every((b) => b === 0)
  } catch {
    return true
  }
}

/**
 * Signatures made and verified recently, keyed by every byte they depend on
 * (the key, the message and, for a verification, the signature), so a hit
 * is exactly the answer the computation gives. Ed25519 is deterministic, and
 * the same bytes come back often: a writer seals the same pending update
 * again on every push until it is acknowledged, a device hears the same
 * envelope from the server and from its LAN neighbours, and a duplicated
 * message carries the same envelope twice. Only successful verifications are
 * kept. Small messages only: a long one costs more to key than to check.
 */
const signatureMemo = new Map<string, Uint8Array | true>()

/** The memo's key for `parts`, or undefined when they are too long to keep. */
function memoKey(kind: string, ...parts: Uint8Array[]): string | undefined {
  let bytes = 0
  for (const part of parts) bytes += part.byteLength
  if (bytes > limits.signatureMemoMessageBytesMax) return undefined
  // Each part with its length first: parts of other lengths never join
  // into the same key.
  let key = kind
  for (const part of parts)
    key += `\u0000${part.byteLength}:${Buffer.from(part.buffer, part.byteOffset, part.byteLength).toString('latin1')}`
  return key
}

function remember(key: string | undefined, value: Uint8Array | true): void {
  if (key === undefined) return
  if (signatureMemo.size >= limits.signaturesMemoMax) {
    const oldest = signatureMemo.keys().next().value
    if (oldest !== undefined) signatureMemo.delete(oldest)
  }
  signatureMemo.set(key, value)
}

/** Signs `message` with `key`. */
export function signBytes(key: KeyPair, message: Uint8Array): Uint8Array {
  const memo = memoKey('s', key.publicKey, message)
  const known = memo === undefined ? undefined : signatureMemo.get(memo)
  if (known instanceof Uint8Array) return known.slice()
  const signature = new Uint8Array(edSign(null, message, key.privateKey))
  remember(memo, signature.slice())
  return signature
}

/** True when `signature` is `publicKey`'s signature of `message`. */
export function verifyBytes(
  publicKey: Uint8Array,
  message: Uint8Array,
  signature: Uint8Array,
): boolean {
  if (signature.byteLength !== SIGNATURE_BYTES) return false
  const memo = memoKey('v', publicKey, signature, message)
  if (memo !== undefined && signatureMemo.get(memo) === true) return true
  const ok = edVerify(null, message, publicKeyObject(publicKey), signature)
  if (ok) remember(memo, true)
  return ok
}

/**
 * The Yjs clientID a writer with `publicKey` writes under for `nonce`: the
 * first 53 bits of SHA-256(domain, key, nonce), lifted into
 * [2^32, 2^53). Anyone can recompute it, and finding a nonce that gives
 * another writer's clientID takes about 2^53 hashes.
 */
export function deriveClientId(publicKey: Uint8Array, nonce: number): number {
  // Every envelope names its writer's clientIDs: derived once per (key,
  // nonce), not once per update. Bounded like the parsed keys.
  const id = `${keyId(publicKey)}/${nonce}`
  let client = derivedClientIds.get(id)
  if (client === undefined) {
    client = computeClientId(publicKey, nonce)
    if (derivedClientIds.size >= limits.publicKeysCachedMax) {
      const oldest = derivedClientIds.keys().next().value
      if (oldest !== undefined) derivedClientIds.delete(oldest)
    }
    derivedClientIds.set(id, client)
  }
  return client
}

const derivedClientIds = new Map<string, number>()

function computeClientId(publicKey: Uint8Array, nonce: number): number {
  const e = encoding.createEncoder()
  encoding.writeVarString(e, DOMAIN.clientId)
  encoding.writeVarUint8Array(e, publicKey)
  encoding.writeVarUint(e, nonce)
  const digest = createHash('sha256').update(encoding.toUint8Array(e)).digest()
  // 53 bits: the high 21 bits of the first word, then the second word.
  const high = digest.readUInt32BE(0) >>> 11
  const low = digest.readUInt32BE(4)
  const value = high * 2 ** 32 + low
  return DERIVED_CLIENT_ID_MIN + (value % DERIVED_CLIENT_ID_SPAN)
}

/** True for clientIDs in the derived range (see {@link deriveClientId}). */
export const isDerivedClientId = (client: number): boolean =>
  Number.isSafeInteger(client) && client >= DERIVED_CLIENT_ID_MIN

/**
 * A public key's fingerprint, as an administrator compares it: `SHA256:`
 * and the base64 of its SHA-256, without padding (the form OpenSSH shows).
 * A device shows its own (`device.keyFingerprint`, `rostersync device`);
 * the server's registry shows the key bound to each id.
 */
export function keyFingerprint(publicKey: Uint8Array): string {
  return `SHA256:${createHash('sha256').update(publicKey).digest('base64').replace(/=+$/, '')}`
}

/**
 * The server's statement that `deviceId` holds `publicKey` on `site`, from
 * `issuedAt` until `expiresAt`. A device shows it to LAN peers, which check
 * it with the server's key, its expiry with their clock, and the
 * revocations the server published (the device's id, and its key's
 * fingerprint once `devices.resetKey` replaced that key).
 */
export interface Certificate {
  readonly site: string
  readonly deviceId: string
  readonly publicKey: Uint8Array
  /** When the server issued it, ms since the epoch. */
  readonly issuedAt: number
  /** Until when it speaks for the device, ms since the epoch (`limits.certificateTtlMs` after `issuedAt`). */
  readonly expiresAt: number
  readonly signature: Uint8Array
}

function certificateBody(c: Omit<Certificate, 'signature'>): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeVarString(e, DOMAIN.certificate)
  encoding.writeVarString(e, c.site)
  encoding.writeVarString(e, c.deviceId)
  encoding.writeVarUint8Array(e, c.publicKey)
  encoding.writeVarUint(e, c.issuedAt)
  encoding.writeVarUint(e, c.expiresAt)
  return encoding.toUint8Array(e)
}

/**
 * The key under which the server's revocations (`r:server`) name a device
 * key it reset: `key/` and the key's fingerprint. A device id never holds
 * `/` (DEVICE_ID_PATTERN), so it names no device.
 */
export function keyRevocationId(publicKey: Uint8Array): string {
  return `key/${keyFingerprint(publicKey)}`
}

/**
 * Throws `CERTIFICATE_EXPIRED` when `cert` has expired by `now` (stretched
 * by `limits.certificateSkewMsMax` for a receiver whose clock runs ahead).
 */
export function checkCertificateTime(cert: Certificate, now: number): void {
  if (now > cert.expiresAt + limits.certificateSkewMsMax)
    throw new CertificateExpiredError(cert.deviceId, cert.expiresAt, now)
}

/**
 * What a device signs to show a LAN peer it holds its certificate's key on
 * this very link: the link's two ends as the transport authenticated them
 * (libp2p peer ids, Noise-proven), prover first. A proof made for one link
 * proves nothing on another: a peer that relays it between two links
 * presents it under its own peer id, which it does not name.
 */
function lanAuthMessage(site: string, prover: string, verifier: string): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeVarString(e, DOMAIN.lanAuth)
  encoding.writeVarString(e, site)
  encoding.writeVarString(e, prover)
  encoding.writeVarString(e, verifier)
  return encoding.toUint8Array(e)
}

/** Signs a LAN link's proof (see lanAuthMessage). */
export function signLanProof(
  key: KeyPair,
  site: string,
  prover: string,
  verifier: string,
): Uint8Array {
  return signBytes(key, lanAuthMessage(site, prover, verifier))
}

/** Whether `proof` is `publicKey`'s for this link (see lanAuthMessage). */
export function verifyLanProof(
  publicKey: Uint8Array,
  site: string,
  prover: string,
  verifier: string,
  proof: Uint8Array,
): boolean {
  return verifyBytes(publicKey, lanAuthMessage(site, prover, verifier), proof)
}

/** The server issues a device's certificate. */
export function issueCertificate(
  serverKey: KeyPair,
  body: Omit<Certificate, 'signature'>,
): Certificate {
  return { ...body, signature: signBytes(serverKey, certificateBody(body)) }
}

/** Throws `SIGNATURE_INVALID` unless `cert` is the server's, for `site`. */
export function verifyCertificate(
  cert: Certificate,
  serverPublicKey: Uint8Array,
  site: string,
): void {
  if (cert.site !== site)
    throw new SignatureInvalidError(`certificate is for another site`, { deviceId: cert.deviceId })
  if (!verifyBytes(serverPublicKey, certificateBody(cert), cert.signature))
    throw new SignatureInvalidError(
      `certificate of ${JSON.stringify(cert.deviceId)} is not the server's`,
    )
}

/** Encodes a certificate (lib0). */
export function encodeCertificate(cert: Certificate): Uint8Array {
  const e = encoding.createEncoder()
  writeCertificate(e, cert)
  return encoding.toUint8Array(e)
}

/** Decodes a certificate; throws `MALFORMED_MESSAGE`. */
export function decodeCertificate(bytes: Uint8Array): Certificate {
  return decodeWhole(bytes, 'certificate', readCertificate)
}

function writeCertificate(e: encoding.Encoder, cert: Certificate): void {
  encoding.writeVarString(e, cert.site)
  encoding.writeVarString(e, cert.deviceId)
  encoding.writeVarUint8Array(e, cert.publicKey)
  encoding.writeVarUint(e, cert.issuedAt)
  encoding.writeVarUint(e, cert.expiresAt)
  encoding.writeVarUint8Array(e, cert.signature)
}

function readCertificate(d: decoding.Decoder): Certificate {
  const site = readBoundedString(d, limits.writerIdCharsMax * 4)
  const deviceId = readBoundedString(d, limits.writerIdCharsMax)
  const publicKey = readFixedBytes(d, PUBLIC_KEY_BYTES, 'public key')
  const issuedAt = readSafeUint(d)
  const expiresAt = readSafeUint(d)
  const signature = readFixedBytes(d, SIGNATURE_BYTES, 'signature')
  return { site, deviceId, publicKey, issuedAt, expiresAt, signature }
}

/**
 * One writer's update, signed. `nonces` name the clientIDs the update's
 * structs are written under (each `deriveClientId(key, nonce)`); `cert` is
 * the writer's certificate (absent for the server, whose key every device
 * pins).
 */
export interface Envelope {
  readonly writer: string
  readonly nonces: readonly number[]
  readonly update: Uint8Array
  readonly cert?: Certificate
  readonly signature: Uint8Array
}

/**
 * What the signature covers: domain, site, the generation (past a site's
 * first), writer, nonces and a SHA-256 of the update (one hash of a large
 * update, not two: Ed25519 hashes what it signs twice). An envelope speaks
 * for one generation of the site's document only: replayed on another (a
 * retired server history sent back after a compaction), its signature
 * fails (PROTOCOL.md, "Generations").
 */
function envelopeBody(
  site: string,
  generation: string,
  writer: string,
  nonces: readonly number[],
  update: Uint8Array,
): Uint8Array {
  const e = encoding.createEncoder()
  if (generation === '') {
    encoding.writeVarString(e, DOMAIN.envelope)
    encoding.writeVarString(e, site)
  } else {
    encoding.writeVarString(e, DOMAIN.envelopeOfGeneration)
    encoding.writeVarString(e, site)
    encoding.writeVarString(e, generation)
  }
  encoding.writeVarString(e, writer)
  encoding.writeVarUint(e, nonces.length)
  for (const n of nonces) encoding.writeVarUint(e, n)
  encoding.writeUint8Array(e, createHash('sha256').update(update).digest())
  return encoding.toUint8Array(e)
}

/**
 * Signs one update as `writer` of `site`, on the generation `generation`
 * of its document (its id; `''`, the default, on a site's first).
 */
export function sealEnvelope(
  key: KeyPair,
  site: string,
  content: { writer: string; nonces: readonly number[]; update: Uint8Array; cert?: Certificate },
  generation = '',
): Envelope {
  const signature = signBytes(
    key,
    envelopeBody(site, generation, content.writer, content.nonces, content.update),
  )
  return content.cert === undefined
    ? { writer: content.writer, nonces: content.nonces, update: content.update, signature }
    : { ...content, signature }
}

/**
 * Throws `SIGNATURE_INVALID` unless `envelope` is signed by `publicKey` for
 * `site` and its document's generation `generation` (see sealEnvelope).
 * Checks the signature only: what the update writes is
 * {@link envelopeClients}' and the update check's business.
 */
export function verifyEnvelope(
  envelope: Envelope,
  publicKey: Uint8Array,
  site: string,
  generation = '',
): void {
  const job = envelopeVerifyJob(envelope, publicKey, site, generation)
  if (!verifyBytes(job.publicKey, job.message, job.signature))
    throw envelopeSignatureError(envelope)
}

/**
 * One Ed25519 verification, ready to run on any thread (core/verify-pool.ts
 * runs them on worker threads): a checked key, the signed message and the
 * signature.
 */
export interface VerifyJob {
  readonly publicKey: Uint8Array
  readonly message: Uint8Array
  readonly signature: Uint8Array
}

/**
 * What {@link verifyEnvelope} checks, as a job. Throws what verifyEnvelope
 * throws before the signature is computed on: `SIGNATURE_INVALID` for a
 * signature of the wrong length, or a key of the wrong length or of small
 * order. The job's answer is then exactly verifyEnvelope's.
 */
export function envelopeVerifyJob(
  envelope: Envelope,
  publicKey: Uint8Array,
  site: string,
  generation = '',
): VerifyJob {
  if (envelope.signature.byteLength !== SIGNATURE_BYTES) throw envelopeSignatureError(envelope)
  publicKeyObject(publicKey)
  return {
    publicKey,
    message: envelopeBody(site, generation, envelope.writer, envelope.nonces, envelope.update),
    signature: envelope.signature,
  }
}

/** The refusal of an envelope whose signature does not verify. */
export function envelopeSignatureError(envelope: Envelope): SignatureInvalidError {
  return new SignatureInvalidError(
    `update is not signed by ${JSON.stringify(envelope.writer)} for this site and generation`,
  )
}

/** The clientIDs an envelope's writer may write under: one per nonce. */
export function envelopeClients(envelope: Envelope, publicKey: Uint8Array): Set<number> {
  return new Set(envelope.nonces.map((n) => deriveClientId(publicKey, n)))
}

/** Encodes an envelope (PROTOCOL.md, "Signed writes"). */
export function encodeEnvelope(envelope: Envelope): Uint8Array {
  // The update (a server's answer part: 16 MB) copied once, into an array
  // of the exact size.
  return joinBytes(envelopePieces(envelope))
}

/**
 * An envelope's encoding in pieces, in order (the update itself one of
 * them, not copied): a message can hold it with one copy of the update
 * (core/protocol.ts, encodeSignedMessage).
 */
export function envelopePieces(envelope: Envelope): Uint8Array[] {
  const head = encoding.createEncoder()
  encoding.writeVarString(head, envelope.writer)
  encoding.writeVarUint(head, envelope.nonces.length)
  for (const n of envelope.nonces) encoding.writeVarUint(head, n)
  encoding.writeVarUint(head, envelope.update.byteLength)
  const tail = encoding.createEncoder()
  if (envelope.cert === undefined) encoding.writeUint8(tail, 0)
  else {
    encoding.writeUint8(tail, 1)
    writeCertificate(tail, envelope.cert)
  }
  encoding.writeVarUint8Array(tail, envelope.signature)
  return [encoding.toUint8Array(head), envelope.update, encoding.toUint8Array(tail)]
}

/** Decodes an envelope; throws `MALFORMED_MESSAGE` on anything else. */
export function decodeEnvelope(bytes: Uint8Array): Envelope {
  return decodeWhole(bytes, 'envelope', (d) => {
    const writer = readBoundedString(d, limits.writerIdCharsMax)
    const count = readSafeUint(d)
    if (count > limits.envelopeNoncesMax)
      throw new MalformedMessageError(
        `envelope names ${count} clientIDs (at most ${limits.envelopeNoncesMax})`,
      )
    const nonces: number[] = []
    for (let i = 0; i < count; i++) nonces.push(readSafeUint(d))
    const update = decoding.readVarUint8Array(d)
    const hasCert = decoding.readUint8(d)
    if (hasCert > 1) throw new MalformedMessageError('envelope certificate flag is not 0 or 1')
    const cert = hasCert === 1 ? readCertificate(d) : undefined
    const signature = readFixedBytes(d, SIGNATURE_BYTES, 'signature')
    return cert === undefined
      ? { writer, nonces, update, signature }
      : { writer, nonces, update, cert, signature }
  })
}

/**
 * The proof a device joins with: its signature over the site, its id and the
 * time, so that the site key alone (shared by every device) does not let one
 * device connect as another. The time bounds replays (see `joinSkewMsMax`).
 */
export function joinProofBody(site: string, deviceId: string, at: number): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeVarString(e, DOMAIN.join)
  encoding.writeVarString(e, site)
  encoding.writeVarString(e, deviceId)
  encoding.writeVarUint(e, at)
  return encoding.toUint8Array(e)
}

/** A device's join proof (see {@link joinProofBody}). */
export function signJoinProof(
  key: KeyPair,
  site: string,
  deviceId: string,
  at: number,
): Uint8Array {
  // Past the memo: a device names a new time in every proof, so the proof
  // is never signed (nor verified) twice, and would only push out of the
  // memo the envelopes that do come back.
  return new Uint8Array(edSign(null, joinProofBody(site, deviceId, at), key.privateKey))
}

/** Throws `SIGNATURE_INVALID` unless `proof` is `publicKey`'s join proof for (site, device, at). */
export function verifyJoinProof(
  publicKey: Uint8Array,
  proof: { site: string; deviceId: string; at: number; signature: Uint8Array },
): void {
  // Past the memo, as signJoinProof; the signature's length and the key
  // are checked as verifyBytes checks them.
  const message = joinProofBody(proof.site, proof.deviceId, proof.at)
  if (
    proof.signature.byteLength !== SIGNATURE_BYTES ||
    !edVerify(null, message, publicKeyObject(publicKey), proof.signature)
  )
    throw new SignatureInvalidError(
      `join proof of ${JSON.stringify(proof.deviceId)} does not verify`,
    )
}

function decodeWhole<T>(bytes: Uint8Array, what: string, read: (d: decoding.Decoder) => T): T {
  try {
    const d = decoding.createDecoder(bytes)
    const value = read(d)
    if (decoding.hasContent(d)) throw new MalformedMessageError(`${what} has trailing bytes`)
    return value
  } catch (cause) {
    if (cause instanceof MalformedMessageError) throw cause
    throw new MalformedMessageError(`${what} does not decode`, cause)
  }
}

function readSafeUint(d: decoding.Decoder): number {
  const n = decoding.readVarUint(d)
  if (!Number.isSafeInteger(n)) throw new MalformedMessageError('integer out of range')
  return n
}

function readFixedBytes(d: decoding.Decoder, bytes: number, what: string): Uint8Array {
  const value = decoding.readVarUint8Array(d)
  if (value.byteLength !== bytes)
    throw new MalformedMessageError(`${what} is ${value.byteLength} bytes, not ${bytes}`)
  return value
}

function readBoundedString(d: decoding.Decoder, charsMax: number): string {
  const value = decoding.readVarString(d)
  if (value.length > charsMax) throw new MalformedMessageError(`string longer than ${charsMax}`)
  return value
}
