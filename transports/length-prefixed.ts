/**
 * Message framing for byte streams (libp2p): each message travels as a
 * varUint byte length followed by the message, so message boundaries survive
 * the muxer splitting or joining chunks. The reader refuses a declared length
 * above its limit before buffering any of it.
 */
import * as encoding from 'lib0/encoding'
import { MalformedMessageError, MessageTooLargeError } from '../core/errors.js'

/** A chunk as libp2p delivers it: bytes, or a list of byte arrays. */
export type Chunk = Uint8Array | { subarray(): Uint8Array }

/** Prefixes `message` with its length. */
export function frame(message: Uint8Array): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeVarUint8Array(e, message)
  return encoding.toUint8Array(e)
}

/** Longest varUint length prefix of a 53-bit length, in bytes. */
const PREFIX_BYTES_MAX = 8

/** Splits a byte stream back into messages. */
export class FrameReader {
  private chunks: Uint8Array[] = []
  private buffered = 0
  /** Length of the message being read, once its prefix is complete. */
  private expected: { readonly prefix: number; readonly length: number } | undefined

  constructor(private messageBytesMax: number) {}

  /** Messages read whole so far. */
  private ended = 0

  /** Bytes of a message in progress (read, its end not yet): 0 between messages. */
  get pendingBytes(): number {
    return this.buffered
  }

  /** How many messages were read whole so far. */
  get messagesEnded(): number {
    return this.ended
  }

  /** Lets go of what is buffered (the link closed: nothing more is read). */
  clear(): void {
    this.chunks = []
    this.buffered = 0
    this.expected = undefined
  }

  /**
   * Changes the longest message read from now on (a LAN link reads little
   * before its peer is admitted); a message whose prefix was read already
   * keeps the limit it was read with.
   */
  limit(messageBytesMax: number): void {
    this.messageBytesMax = messageBytesMax
  }

  /**
   * Adds received bytes; returns the messages they complete. Throws
   * `MESSAGE_TOO_LARGE` for a declared length over the limit and
   * `MALFORMED_MESSAGE` for a prefix that does not end.
   */
  push(chunk: Chunk): Uint8Array[] {
    const bytes = chunk instanceof Uint8Array ? chunk : chunk.subarray()
    if (bytes.byteLength > 0) {
      this.chunks.push(bytes)
      this.buffered += bytes.byteLength
    }
    const messages: Uint8Array[] = []
    for (;;) {
      this.expected ??= this.readPrefix()
      if (this.expected === undefined) return messages
      const { prefix, length } = this.expected
      if (this.buffered < prefix + length) return messages
      // Joining once per complete message keeps reading linear in its size.
      const all = this.take(prefix + length)
      messages.push(all.subarray(prefix))
      this.ended++
      this.expected = undefined
    }
  }

  private readPrefix(): { prefix: number; length: number } | undefined {
    let length = 0
    let scale = 1
    let index = 0
    for (const chunk of this.chunks) {
      for (const byte of chunk) {
        length += (byte & 0x7f) * scale
        index++
        if (byte < 0x80) {
          if (length > this.messageBytesMax)
            throw new MessageTooLargeError('LAN message', length, this.messageBytesMax)
          return { prefix: index, length }
        }
        if (index >= PREFIX_BYTES_MAX)
          throw new MalformedMessageError('message length prefix does not end')
        scale *= 128
      }
    }
    return undefined
  }

  /** Removes and returns the first `count` buffered bytes as one array. */
  private take(count: number): Uint8Array {
    const joined = new Uint8Array(count)
    let filled = 0
    while (filled < count) {
      const chunk = this.chunks[0] as Uint8Array
      const need = count - filled
      if (chunk.byteLength <= need) {
        joined.set(chunk, filled)
        filled += chunk.byteLength
        this.chunks.shift()
      } else {
        joined.set(chunk.subarray(0, need), filled)
        this.chunks[0] = chunk.subarray(need)
        filled += need
      }
    }
    this.buffered -= count
    return joined
  }
}
