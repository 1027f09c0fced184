/**
 * The encoded messages of large answer parts, kept while their part is: the
 * replica hands out the same parts (the same arrays) while the document does
 * not change (peers/replica/answer-cache.ts), and the server the same sealed
 * envelopes for them (peers/server-signing.ts). Every fresh device asks with
 * the empty state vector after a restart, and the flood bench's 500
 * connect/disconnect cycles each fetched the roster: encoding each answer
 * again copied it whole every time (0.3 ms and a roster's worth of garbage
 * per answer). Keyed weakly by the part: a part no longer handed out takes
 * its messages with it.
 */
import { limits, netLimits } from '../../core/limits.js'
import { encodeMessage } from '../../core/protocol.js'
import { answerPart, type AnswerStream } from '../replica/answer-stream.js'

type PartMessageType = 'sync-step2' | 'sync-update' | 'signed-step2' | 'signed-update'

const kept: Record<PartMessageType, WeakMap<object, Uint8Array>> = {
  'sync-step2': new WeakMap(),
  'sync-update': new WeakMap(),
  'signed-step2': new WeakMap(),
  'signed-update': new WeakMap(),
}

/** The message of one answer part: a Yjs update, or the envelopes of one. */
export function partMessage(
  type: PartMessageType,
  part: Uint8Array | readonly Uint8Array[],
): Uint8Array {
  const encode = (): Uint8Array =>
    type === 'sync-step2' || type === 'sync-update'
      ? encodeMessage({ type, update: part as Uint8Array })
      : encodeMessage({ type, envelopes: part as Uint8Array[] })
  const bytes =
    part instanceof Uint8Array ? part.byteLength : part.reduce((n, e) => n + e.byteLength, 0)
  // Small answers are encoded afresh each time (and not the same arrays anyway).
  if (bytes < limits.answerCachedBytesMin) return encode()
  const map = kept[type]
  let message = map.get(part)
  if (message === undefined) {
    message = encode()
    map.set(part, message)
  }
  return message
}

/**
 * An answer's messages, each made when asked for, in order (at least one):
 * how many may not be known until the last is made (a server's answer is
 * encoded part by part: peers/replica/answer-stream.ts).
 */
export interface AnswerMessages {
  /**
   * Message `index` (0 up to the last), encoded: a `signed-update`, the
   * last a `signed-step2`.
   */
  message(index: number): Uint8Array
  /** Whether message `index` is the last. */
  isLast(index: number): boolean
}

/**
 * A replica's answer (`parts`) as unsigned messages, each made when asked
 * for: `sync-update`s, the last a `sync-step2`.
 */
export function plainAnswer(parts: AnswerStream): AnswerMessages {
  return {
    isLast: (i) => parts.isLast(i),
    message: (i) =>
      partMessage(parts.isLast(i) ? 'sync-step2' : 'sync-update', answerPart(parts, i)),
  }
}

/** `lists` of envelopes as an answer's messages, each encoded when asked for. */
export function answerMessages(lists: readonly (readonly Uint8Array[])[]): AnswerMessages {
  const last = lists.length - 1
  return {
    isLast: (i) => i >= last,
    message: (i) => {
      const envelopes = lists[i] as readonly Uint8Array[]
      return encodeMessage(
        i === last ? { type: 'signed-step2', envelopes } : { type: 'signed-update', envelopes },
      )
    },
  }
}

/**
 * Envelopes grouped, in order, into messages of at most
 * `netLimits.answerChunkBytesMax` bytes (an envelope larger than that goes
 * alone); always at least one message, empty when there is nothing.
 */
export function envelopeMessages(envelopes: readonly Uint8Array[]): Uint8Array[][] {
  const max = netLimits.answerChunkBytesMax - netLimits.answerChunkOverheadBytesMax
  const messages: Uint8Array[][] = [[]]
  let bytes = 0
  for (const envelope of envelopes) {
    const last = messages[messages.length - 1] as Uint8Array[]
    if (last.length > 0 && bytes + envelope.byteLength > max) {
      messages.push([envelope])
      bytes = envelope.byteLength
    } else {
      last.push(envelope)
      bytes += envelope.byteLength
    }
  }
  return messages
}
