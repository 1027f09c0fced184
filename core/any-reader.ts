/**
 * lib0's `readVarString` and `readAny`, reading short ASCII strings faster.
 *
 * Most of a roster's bytes are short strings (names, ids, access levels,
 * card values, field names), and lib0 decodes each with
 * `TextDecoder.decode(bytes.subarray(...))`: a view allocated and a native
 * call per string. Here:
 *
 * - A short string whose bytes are all ASCII is sliced straight off the
 *   bytes (`Buffer#toString('latin1', ...)`: below 0x80 one byte is one
 *   UTF-16 unit, and V8 makes the same one-byte string of them).
 * - In a large decode (a snapshot, a full sync's part), a short ASCII
 *   string met again is the string made the first time (`seen`, a table
 *   by a hash of the bytes, checked byte for byte): a roster repeats its
 *   departments, access levels, statuses and field names a million times.
 *   A 1M-user snapshot then loads in 5.7 s instead of 8.8 (lib0) and holds
 *   1,415 MB of heap instead of 1,661.
 * - Anything else (a byte >= 0x80, a long string) goes to the same fatal,
 *   BOM-keeping `TextDecoder` lib0 uses: invalid UTF-8 throws as it did.
 * - A length past the end of the bytes throws (`TruncatedStringError`),
 *   where lib0 throws its "Unexpected end of array": never a read of the
 *   rest of the `ArrayBuffer` when the bytes are a view into a larger one.
 *
 * Every other kind of value is read by lib0's own functions. Used for
 * Yjs updates (core/apply-update.ts) and the values of the codec
 * (core/codec.ts); `test/apply-update.test.ts` compares them with lib0's
 * through `Y.applyUpdate`.
 */
import * as decoding from 'lib0/decoding'

/** Strings longer than this (bytes) go to `TextDecoder`, which is faster on long runs. */
const ASCII_SLICE_MAX = 128

/** Slots of a decode's table of strings seen ({@link StringSource.seen}). */
export const SEEN_SLOTS = 4096
const SEEN_MASK = SEEN_SLOTS - 1

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })

/** A string's length runs past the end of the bytes. */
export class TruncatedStringError extends Error {
  constructor(at: number, length: number, size: number) {
    super(`a string of ${length} bytes at byte ${at} runs past the end of the ${size} bytes`)
    this.name = 'TruncatedStringError'
  }
}

/** lib0's `Decoder` with its bytes also seen as a `Buffer` (for `latin1` slices). */
export interface StringSource {
  readonly decoder: decoding.Decoder
  readonly bytes: Buffer
  /**
   * Short ASCII strings this decode made, by a hash of their bytes
   * ({@link SEEN_SLOTS} slots, the last one made in each), for a large
   * decode: a string met again (a department, an access level, a field
   * name, a status) is the same string, not another copy of it. Shared
   * strings are indistinguishable from copies in JavaScript.
   */
  readonly seen: Array<string | undefined> | undefined
}

/** `decoding.readVarString` (see the module comment). */
export function readString(source: StringSource): string {
  const decoder = source.decoder
  const length = decoding.readVarUint(decoder)
  const start = decoder.pos
  const end = start + length
  const arr = decoder.arr
  if (end > arr.length) throw new TruncatedStringError(start, length, arr.length)
  decoder.pos = end
  if (length <= ASCII_SLICE_MAX) {
    let i = start
    let hash = length
    for (; i < end; i++) {
      const byte = arr[i] as number
      if (byte >= 0x80) break
      hash = (Math.imul(hash, 31) + byte) | 0
    }
    if (i === end) {
      const seen = source.seen
      if (seen === undefined) return source.bytes.toString('latin1', start, end)
      const slot = (hash ^ (hash >>> 15)) & SEEN_MASK
      const earlier = seen[slot]
      if (earlier !== undefined && earlier.length === length) {
        let j = 0
        while (j < length && earlier.charCodeAt(j) === arr[start + j]) j++
        if (j === length) return earlier
      }
      const made = source.bytes.toString('latin1', start, end)
      seen[slot] = made
      return made
    }
  }
  return utf8.decode(arr.subarray(start, end))
}

// lib0's `Any` tags (`encoding.writeAny`), 127 down.
const ANY_UNDEFINED = 127
const ANY_NULL = 126
const ANY_INTEGER = 125
const ANY_FLOAT32 = 124
const ANY_FLOAT64 = 123
const ANY_BIGINT = 122
const ANY_FALSE = 121
const ANY_TRUE = 120
const ANY_STRING = 119
const ANY_OBJECT = 118
const ANY_ARRAY = 117
const ANY_BYTES = 116

/**
 * lib0's `decoding.readAny`, with {@link readString} for the strings and the
 * keys. Recursive, as lib0's is: a value nested deep enough overflows the
 * stack here too (at another depth than in lib0), in both cases while the
 * update's structs are read, before any is integrated. A replica's update
 * scan (core/update-scan.ts) leaves values nested over 64 levels to Yjs's
 * own decoder.
 */
export function readAny(source: StringSource): unknown {
  const decoder = source.decoder
  const tag = decoding.readUint8(decoder)
  switch (tag) {
    case ANY_STRING:
      return readString(source)
    case ANY_OBJECT: {
      const length = decoding.readVarUint(decoder)
      const object: Record<string, unknown> = {}
      for (let i = 0; i < length; i++) {
        const key = readString(source)
        object[key] = readAny(source)
      }
      return object
    }
    case ANY_ARRAY: {
      const length = decoding.readVarUint(decoder)
      const array: unknown[] = []
      for (let i = 0; i < length; i++) array.push(readAny(source))
      return array
    }
    case ANY_INTEGER:
      return decoding.readVarInt(decoder)
    case ANY_UNDEFINED:
      return undefined
    case ANY_NULL:
      return null
    case ANY_FALSE:
      return false
    case ANY_TRUE:
      return true
    case ANY_FLOAT32:
      return decoding.readFloat32(decoder)
    case ANY_FLOAT64:
      return decoding.readFloat64(decoder)
    case ANY_BIGINT:
      return decoding.readBigInt64(decoder)
    case ANY_BYTES:
      return decoding.readVarUint8Array(decoder)
    default:
      // lib0 calls `undefined` as a function here: a TypeError.
      throw new TypeError(`unknown Any tag ${tag} at byte ${decoder.pos - 1}`)
  }
}

/** `decoding.readAny(decoder)`, read with {@link readAny}. */
export function readAnyValue(decoder: decoding.Decoder): unknown {
  const arr = decoder.arr
  return readAny({
    decoder,
    bytes: Buffer.from(arr.buffer, arr.byteOffset, arr.byteLength),
    seen: undefined,
  })
}
