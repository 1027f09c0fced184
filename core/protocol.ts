/**
 * The wire messages (PROTOCOL.md): the y-websocket protocol (y-protocols
 * sync step 1 / step 2 / update, awareness) plus rostersync's error message.
 * A handful of pure functions; the same bytes travel over every transport.
 */
import * as decoding from 'lib0/decoding'
import * as encoding from 'lib0/encoding'
import { MalformedMessageError } from './errors.js'
import { netLimits } from './limits.js'

/** Top-level message types (y-websocket's numbering; 100+ are rostersync's). */
export const MessageType = {
  sync: 0,
  awareness: 1,
  auth: 2,
  queryAwareness: 3,
  error: 100,
  /** Signed envelopes (PROTOCOL.md, "Signed writes"): `varUint subtype`, then a list. */
  signed: 101,
  /** The server's key and the joining device's certificate, sent once on admission. */
  hello: 102,
} as const
/** Sub-types of a signed message: as the sync sub-types they stand for. */
export const SignedType = { step2: 1, update: 2 } as const
/** Sync sub-message types (y-protocols/sync). */
export const SyncType = { step1: 0, step2: 1, update: 2 } as const

/** A decoded message. */
export type Message =
  | { readonly type: 'sync-step1'; readonly stateVector: Uint8Array }
  | { readonly type: 'sync-step2'; readonly update: Uint8Array }
  | { readonly type: 'sync-update'; readonly update: Uint8Array }
  | { readonly type: 'awareness'; readonly payload: Uint8Array }
  | { readonly type: 'query-awareness' }
  | { readonly type: 'auth'; readonly payload: Uint8Array }
  | { readonly type: 'error'; readonly code: string; readonly message: string }
  /**
   * Signed envelopes (core/signing.ts), each still encoded: a step 2 (the
   * answer to a step 1: the envelopes the asker lacks) or an update.
   */
  | {
      readonly type: 'signed-step2' | 'signed-update'
      readonly envelopes: readonly Uint8Array[]
    }
  /**
   * The server's public key and, for a device that joined with a key, its
   * certificate; then the server's signed generation statement
   * (core/generation-statement.ts), empty for a site's first generation.
   */
  | {
      readonly type: 'hello'
      readonly serverKey: Uint8Array
      readonly certificate: Uint8Array
      readonly generation?: Uint8Array
    }

/** Bytes `n` takes as a varUint. */
export function varUintBytes(n: number): number {
  let bytes = 1
  while (n >= 128) {
    n = Math.floor(n / 128)
    bytes++
  }
  return bytes
}

/**
 * The varUints `head`, then each of `arrays` as a varUint8Array, written
 * into one array of the exact size: an answer's part is 16 MB, and a
 * growing encoder would allocate it twice more and copy it twice
 * (garbage the server's collector then walks its whole heap for). An array
 * may be given in pieces (an envelope: core/signing.ts, envelopePieces),
 * written one after another under one length.
 */
export function exactBytes(
  head: readonly number[],
  arrays: readonly (Uint8Array | readonly Uint8Array[])[],
): Uint8Array {
  const lengths: number[] = []
  let size = 0
  for (const n of head) size += varUintBytes(n)
  for (const array of arrays) {
    let length = 0
    if (array instanceof Uint8Array) length = array.byteLength
    else for (const piece of array) length += piece.byteLength
    lengths.push(length)
    size += varUintBytes(length) + length
  }
  // Written in place: an encoder would allocate a first buffer of its own.
  const out = new Uint8Array(size)
  let at = 0
  for (const n of head) at = writeVarUintAt(out, at, n)
  arrays.forEach((array, i) => {
    at = writeVarUintAt(out, at, lengths[i] ?? 0)
    if (array instanceof Uint8Array) {
      out.set(array, at)
      at += array.byteLength
      return
    }
    for (const piece of array) {
      out.set(piece, at)
      at += piece.byteLength
    }
  })
  return out
}

/** Writes `n` as a varUint (lib0's layout) at `at`; returns the index after it. */
export function writeVarUintAt(out: Uint8Array, at: number, n: number): number {
  while (n > 0x7f) {
    out[at++] = 0x80 | (n & 0x7f)
    n = Math.floor(n / 128)
  }
  out[at++] = n
  return at
}

/** `pieces` one after another, in one array of the exact size (each copied once). */
export function joinBytes(pieces: readonly Uint8Array[]): Uint8Array {
  let length = 0
  for (const piece of pieces) length += piece.byteLength
  const out = new Uint8Array(length)
  let at = 0
  for (const piece of pieces) {
    out.set(piece, at)
    at += piece.byteLength
  }
  return out
}

/** Encodes a message. */
export function encodeMessage(message: Message): Uint8Array {
  switch (message.type) {
    case 'sync-step1':
      return exactBytes([MessageType.sync, SyncType.step1], [message.stateVector])
    case 'sync-step2':
    case 'sync-update':
      return exactBytes(
        [MessageType.sync, message.type === 'sync-step2' ? SyncType.step2 : SyncType.update],
        [message.update],
      )
    case 'signed-step2':
    case 'signed-update':
      return exactBytes(
        [
          MessageType.signed,
          message.type === 'signed-step2' ? SignedType.step2 : SignedType.update,
          message.envelopes.length,
        ],
        message.envelopes,
      )
    default:
      return encodeSmall(message)
  }
}

/**
 * The bytes `encodeMessage` makes of a signed message, its envelopes given
 * in pieces (core/signing.ts, envelopePieces): each piece copied once, into
 * one array of the exact size. An answer part's envelope is 16 MB: making
 * the envelope first copied it twice, and the extra 340 MB of a 1M-user
 * answer made V8 mark its whole heap more often (issue 13).
 */
export function encodeSignedMessage(
  type: 'signed-step2' | 'signed-update',
  envelopes: readonly (readonly Uint8Array[])[],
): Uint8Array {
  return exactBytes(
    [
      MessageType.signed,
      type === 'signed-step2' ? SignedType.step2 : SignedType.update,
      envelopes.length,
    ],
    envelopes,
  )
}

/** Encodes a message of the other kinds (small ones). */
function encodeSmall(message: Message): Uint8Array {
  const e = encoding.createEncoder()
  switch (message.type) {
    case 'awareness':
      encoding.writeVarUint(e, MessageType.awareness)
      encoding.writeVarUint8Array(e, message.payload)
      break
    case 'query-awareness':
      encoding.writeVarUint(e, MessageType.queryAwareness)
      break
    case 'auth':
      encoding.writeVarUint(e, MessageType.auth)
      encoding.writeVarUint8Array(e, message.payload)
      break
    case 'error':
      encoding.writeVarUint(e, MessageType.error)
      encoding.writeVarString(e, message.code)
      encoding.writeVarString(e, message.message)
      break
    case 'hello':
      encoding.writeVarUint(e, MessageType.hello)
      encoding.writeVarUint8Array(e, message.serverKey)
      encoding.writeVarUint8Array(e, message.certificate)
      // Issue 13: the generation statement, when there is one (a hello
      // without it is a site's first generation, as before).
      if (message.generation !== undefined && message.generation.byteLength > 0)
        encoding.writeVarUint8Array(e, message.generation)
      break
    default:
      throw new Error(`encodeSmall: ${message.type}`)
  }
  return encoding.toUint8Array(e)
}

/** Decodes one message; throws `MALFORMED_MESSAGE` on anything else. */
export function decodeMessage(bytes: Uint8Array): Message {
  try {
    const d = decoding.createDecoder(bytes)
    const message = readMessage(d)
    if (decoding.hasContent(d)) throw new Error('trailing bytes')
    return message
  } catch (cause) {
    if (cause instanceof MalformedMessageError) throw cause
    throw new MalformedMessageError(`message does not decode: ${(cause as Error).message}`, cause)
  }
}

function readMessage(d: decoding.Decoder): Message {
  const type = decoding.readVarUint(d)
  switch (type) {
    case MessageType.sync: {
      const sub = decoding.readVarUint(d)
      const payload = decoding.readVarUint8Array(d)
      if (sub === SyncType.step1) return { type: 'sync-step1', stateVector: payload }
      if (sub === SyncType.step2) return { type: 'sync-step2', update: payload }
      if (sub === SyncType.update) return { type: 'sync-update', update: payload }
      throw new MalformedMessageError(`unknown sync message type ${sub}`)
    }
    case MessageType.awareness:
      return { type: 'awareness', payload: decoding.readVarUint8Array(d) }
    case MessageType.queryAwareness:
      return { type: 'query-awareness' }
    case MessageType.auth:
      return { type: 'auth', payload: decoding.readVarUint8Array(d) }
    case MessageType.error:
      return { type: 'error', code: decoding.readVarString(d), message: decoding.readVarString(d) }
    case MessageType.signed: {
      const sub = decoding.readVarUint(d)
      if (sub !== SignedType.step2 && sub !== SignedType.update)
        throw new MalformedMessageError(`unknown signed message type ${sub}`)
      const count = decoding.readVarUint(d)
      if (count > netLimits.envelopesPerMessageMax)
        throw new MalformedMessageError(
          `message holds ${count} envelopes (at most ${netLimits.envelopesPerMessageMax})`,
        )
      const envelopes: Uint8Array[] = []
      for (let i = 0; i < count; i++) envelopes.push(decoding.readVarUint8Array(d))
      return { type: sub === SignedType.step2 ? 'signed-step2' : 'signed-update', envelopes }
    }
    case MessageType.hello: {
      const serverKey = decoding.readVarUint8Array(d)
      const certificate = decoding.readVarUint8Array(d)
      if (!decoding.hasContent(d)) return { type: 'hello', serverKey, certificate }
      return { type: 'hello', serverKey, certificate, generation: decoding.readVarUint8Array(d) }
    }
    default:
      throw new MalformedMessageError(`unknown message type ${type}`)
  }
}

/** WebSocket close codes rostersync uses; a device does not reconnect after a final one ({@link isFinalClose}). */
export const CloseCode = {
  authFailed: 4401,
  revoked: 4403,
  unknownRoom: 4404,
  tooLarge: 1009,
  serverClosing: 1001,
  // Issue 11: front door
  /** The join URL does not parse (`MALFORMED_REQUEST`): retrying the same URL cannot help. */
  malformedRequest: 4400,
  /** The id is reserved or differs from a registered one only by case (`ID_CONFLICT`). */
  idConflict: 4409,
  /** A newer connection with the same device id took over (`SESSION_REPLACED`). */
  replaced: 4410,
  /** The device waits for the administrator's approval (`PEER_PENDING`); retry with backoff. */
  pending: 4423,
  /** The registry is at its limit (`REGISTRY_FULL`); retry with backoff. */
  registryFull: 4507,
  /**
   * This side could not handle a message or an admission (`INTERNAL`,
   * `STORAGE_FAILED`, ...); not the sender's fault: retry with backoff.
   */
  internal: 1011,
  // Issue 11: floods
  /** A refused message or a broken limit; the reason starts with its error code. */
  refused: 1008,
  /** A message that does not decode (`MALFORMED_MESSAGE`). */
  malformed: 1007,
  // Issue 13: generations
  /**
   * The site's document started a new generation, or the peer is on
   * another one (`GENERATION_CHANGED`): a device reconnects after its
   * spread delay and moves (one full sync).
   */
  generationChanged: 4412,
  /**
   * Too many devices fetch the new generation now (`TOO_MANY_MOVES`,
   * server-peer/generation-moves.ts): retry with the usual backoff.
   */
  tryAgainLater: 1013,
} as const

/** True for close codes after which a device must not retry on its own. */
export const isFinalClose = (code: number): boolean =>
  code === CloseCode.authFailed ||
  code === CloseCode.revoked ||
  // Issue 11: front door
  code === CloseCode.malformedRequest ||
  code === CloseCode.idConflict ||
  code === CloseCode.replaced
