/**
 * `Y.applyUpdate` with a faster reader of the update's strings.
 *
 * Most of a roster's bytes are short strings (names, ids, access levels,
 * card values, field names), and lib0 decodes each with
 * `TextDecoder.decode(bytes.subarray(...))`: a view allocated and a native
 * call per string. Loading a 1M-user server's 330 MB snapshot spent about a
 * third of its decode there (3.2 s of 10). Yjs lets the caller choose the
 * decoder class (`Y.applyUpdateV2(doc, update, origin, YDecoder)`, which is
 * what `Y.applyUpdate` calls with `UpdateDecoderV1`); this one differs from
 * `Y.UpdateDecoderV1` only in how it reads strings (keys, root names and the
 * strings of `Any` values, field names included), so the document it builds
 * is the same:
 *
 * - A short string whose bytes are all ASCII is sliced straight off the
 *   bytes (`Buffer#toString('latin1', ...)`: one byte is one UTF-16 unit
 *   below 0x80, the same one-byte string V8 makes from the same bytes).
 * - Anything else (a byte >= 0x80, a long string) goes to the same fatal,
 *   BOM-keeping `TextDecoder` lib0 uses: invalid UTF-8 throws as it did.
 * - A length past the end of the bytes throws; lib0 would read on into the
 *   rest of the `ArrayBuffer` when the update is a view into a larger one.
 *
 * Every other value kind is read by lib0's own functions. `test/apply-update.test.ts`
 * compares the documents and errors with `Y.applyUpdate`'s over random
 * updates, valid and corrupted. The simulator's observer keeps
 * `Y.applyUpdate` (an oracle does not share the code it checks).
 */
import * as decoding from 'lib0/decoding'
import * as Y from 'yjs'

/** Strings longer than this (bytes) go to `TextDecoder`, which is faster on long runs. */
const ASCII_SLICE_MAX = 128

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })

/** A length that runs past the end of the update. */
export class UpdateTruncatedError extends Error {
  constructor(at: number, length: number, size: number) {
    super(`a string of ${length} bytes at byte ${at} runs past the update's ${size} bytes`)
    this.name = 'UpdateTruncatedError'
  }
}

/** lib0's `Decoder` with the update's bytes also seen as a `Buffer` (for `latin1` slices). */
interface StringSource {
  readonly decoder: decoding.Decoder
  readonly bytes: Buffer
}

function readString(source: StringSource): string {
  const decoder = source.decoder
  const length = decoding.readVarUint(decoder)
  const start = decoder.pos
  const end = start + length
  const arr = decoder.arr
  if (end > arr.length) throw new UpdateTruncatedError(start, length, arr.length)
  decoder.pos = end
  if (length <= ASCII_SLICE_MAX) {
    let i = start
    while (i < end && (arr[i] as number) < 0x80) i++
    if (i === end) return source.bytes.toString('latin1', start, end)
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

/** lib0's `decoding.readAny`, with {@link readString} for the strings and the keys. */
function readAny(source: StringSource): unknown {
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

/** `Y.UpdateDecoderV1` reading strings with {@link readString}. */
class StringSlicingDecoderV1 extends Y.UpdateDecoderV1 implements StringSource {
  readonly decoder: decoding.Decoder
  readonly bytes: Buffer

  constructor(decoder: decoding.Decoder) {
    super(decoder)
    this.decoder = decoder
    const arr = decoder.arr
    this.bytes = Buffer.from(arr.buffer, arr.byteOffset, arr.byteLength)
  }

  override readString(): string {
    return readString(this)
  }

  override readKey(): string {
    return readString(this)
  }

  override readAny(): unknown {
    return readAny(this)
  }
}

/** `Y.applyUpdate(doc, update, origin)`, its strings read faster (see the module's comment). */
export function applyUpdate(doc: Y.Doc, update: Uint8Array, origin?: unknown): void {
  Y.applyUpdateV2(doc, update, origin, StringSlicingDecoderV1)
}
