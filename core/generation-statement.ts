/**
 * A site's generation (issue 13, history compaction) as the server states
 * it: `{ site, n, id, at }` signed with the server's key under a domain of
 * its own (`rostersync/generation/1`), so that a device checks it with the
 * server key it pinned, whoever relays it. `n` counts the site's
 * generations (0, implicit, for a site that never compacted), `id` is 16
 * random bytes (hex) that name one generation however the server's data
 * was restored; two peers are on the same generation when their ids match.
 *
 * Also here: the clientIDs a generation's base writes under
 * (core/generation.ts), derived from the server's key, the generation's id
 * and the root, in the range of derived clientIDs: one per root and
 * generation, none a writer can mint (that takes the server's key).
 */
import { createHash } from 'node:crypto'
import * as decoding from 'lib0/decoding'
import * as encoding from 'lib0/encoding'
import { MalformedMessageError, SignatureInvalidError } from './errors.js'
import { DERIVED_CLIENT_ID_MIN, signBytes, verifyBytes, type KeyPair } from './signing.js'

const DOMAIN = {
  statement: 'rostersync/generation/1',
  base: 'rostersync/base/1',
} as const

/** Bytes of a generation id (hex in `Generation.id`). */
export const GENERATION_ID_BYTES = 16
/** Most bytes an encoded statement may take (a site is a base64 key: small). */
export const GENERATION_STATEMENT_BYTES_MAX = 512

/** One generation of a site's document. */
export interface Generation {
  /** 1 for the first compaction, then one more each time (0: never compacted). */
  readonly n: number
  /** 16 random bytes, hex. */
  readonly id: string
}

/** The generation a site that never compacted is on (no statement is sent for it). */
export const FIRST_GENERATION: Generation = { n: 0, id: '' }

/** A server's signed statement of the generation its site is on. */
export interface GenerationStatement extends Generation {
  readonly site: string
  /** When the server started it, ms since the epoch (its clock). */
  readonly at: number
  readonly signature: Uint8Array
}

/** Whether two generations are the same one (their ids). */
export const sameGeneration = (a: Generation, b: Generation): boolean => a.id === b.id

function statementBody(s: Omit<GenerationStatement, 'signature'>): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeVarString(e, DOMAIN.statement)
  encoding.writeVarString(e, s.site)
  encoding.writeVarUint(e, s.n)
  encoding.writeVarString(e, s.id)
  encoding.writeVarUint(e, s.at)
  return encoding.toUint8Array(e)
}

/** The server signs the generation its site is on. */
export function signGeneration(
  key: KeyPair,
  statement: Omit<GenerationStatement, 'signature'>,
): GenerationStatement {
  return { ...statement, signature: signBytes(key, statementBody(statement)) }
}

/** Encodes a statement for the wire (the server's hello, a LAN link's first frame). */
export function encodeGenerationStatement(s: GenerationStatement): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeVarString(e, s.site)
  encoding.writeVarUint(e, s.n)
  encoding.writeVarString(e, s.id)
  encoding.writeVarUint(e, s.at)
  encoding.writeVarUint8Array(e, s.signature)
  return encoding.toUint8Array(e)
}

/** Decodes a statement; `MALFORMED_MESSAGE` on anything else. */
export function decodeGenerationStatement(bytes: Uint8Array): GenerationStatement {
  if (bytes.byteLength > GENERATION_STATEMENT_BYTES_MAX)
    throw new MalformedMessageError(`generation statement of ${bytes.byteLength} bytes`)
  try {
    const d = decoding.createDecoder(bytes)
    const site = decoding.readVarString(d)
    const n = decoding.readVarUint(d)
    const id = decoding.readVarString(d)
    const at = decoding.readVarUint(d)
    const signature = decoding.readVarUint8Array(d)
    if (decoding.hasContent(d)) throw new Error('trailing bytes')
    if (!/^[0-9a-f]{32}$/.test(id)) throw new Error('generation id is not 16 bytes of hex')
    if (!Number.isSafeInteger(n) || n < 1) throw new Error('generation number out of range')
    if (!Number.isSafeInteger(at)) throw new Error('time out of range')
    return { site, n, id, at, signature }
  } catch (cause) {
    throw new MalformedMessageError(
      `generation statement does not decode: ${(cause as Error).message}`,
      cause,
    )
  }
}

/**
 * Checks a statement against the server's key and site (a device's pinned
 * ones); `SIGNATURE_INVALID` when it is not that server's for that site.
 */
export function verifyGeneration(
  statement: GenerationStatement,
  serverKey: Uint8Array,
  site: string,
): void {
  if (statement.site !== site)
    throw new SignatureInvalidError('the generation statement names another site')
  const { signature, ...body } = statement
  if (!verifyBytes(serverKey, statementBody(body), signature))
    throw new SignatureInvalidError('the generation statement is not signed by the server')
}

const DERIVED_SPAN = 2 ** 53 - DERIVED_CLIENT_ID_MIN

/**
 * The clientID a generation's base writes `root` under: 53 bits of
 * SHA-256(domain, server key, generation id, root), lifted into the derived
 * range (core/signing.ts). Distinct per root and generation; no device can
 * reach it (its clientIDs come from its own key).
 */
export function baseClientId(serverKey: Uint8Array, generationId: string, root: string): number {
  const e = encoding.createEncoder()
  encoding.writeVarString(e, DOMAIN.base)
  encoding.writeVarUint8Array(e, serverKey)
  encoding.writeVarString(e, generationId)
  encoding.writeVarString(e, root)
  const digest = createHash('sha256').update(encoding.toUint8Array(e)).digest()
  const high = digest.readUInt32BE(0) >>> 11
  const low = digest.readUInt32BE(4)
  return DERIVED_CLIENT_ID_MIN + ((high * 2 ** 32 + low) % DERIVED_SPAN)
}
