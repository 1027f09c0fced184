/**
 * `Y.applyUpdate`, its strings read faster (core/any-reader.ts).
 *
 * Yjs lets the caller choose the decoder class (`Y.applyUpdateV2(doc,
 * update, origin, YDecoder)` is what `Y.applyUpdate` calls with
 * `UpdateDecoderV1`); this one differs from `Y.UpdateDecoderV1` only in how
 * it reads strings (keys, root names, text and the strings of `Any` values,
 * field names included), so the document it builds is the same. Loading a
 * 1M-user server's 330 MB snapshot spent about a third of its decode in
 * lib0's string reads (3.2 s of 10); with this decoder (and the strings a
 * large update repeats shared) the load takes 5.7 s instead of 8.8.
 *
 * `test/apply-update.test.ts` compares the documents it builds, and what it
 * refuses, with `Y.applyUpdate`'s over random updates, valid and corrupted.
 * The simulator's observer keeps `Y.applyUpdate` (an oracle does not share
 * the code it checks).
 */
import type * as decoding from 'lib0/decoding'
import * as Y from 'yjs'
import { readAny, readString, SEEN_SLOTS, type StringSource } from './any-reader.js'

/**
 * Updates from this size on share their repeated strings (`StringSource.seen`):
 * a table of {@link SEEN_SLOTS} slots is worth it for a snapshot or a full
 * sync's part, not for one user's edit.
 */
const SHARED_STRINGS_BYTES_MIN = 64 * 1024

/** `Y.UpdateDecoderV1` reading strings with {@link readString}. */
class StringSlicingDecoderV1 extends Y.UpdateDecoderV1 implements StringSource {
  readonly decoder: decoding.Decoder
  readonly bytes: Buffer
  readonly seen: Array<string | undefined> | undefined

  constructor(decoder: decoding.Decoder) {
    super(decoder)
    this.decoder = decoder
    const arr = decoder.arr
    this.bytes = Buffer.from(arr.buffer, arr.byteOffset, arr.byteLength)
    this.seen =
      arr.byteLength >= SHARED_STRINGS_BYTES_MIN
        ? new Array<string | undefined>(SEEN_SLOTS)
        : undefined
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

/** `Y.applyUpdate(doc, update, origin)`, its strings read faster (see the module comment). */
export function applyUpdate(doc: Y.Doc, update: Uint8Array, origin?: unknown): void {
  Y.applyUpdateV2(doc, update, origin, StringSlicingDecoderV1)
}
