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
import { limits } from '../../core/limits.js'
import { encodeMessage } from '../../core/protocol.js'

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
