/**
 * Answer parts' messages (peers/sync-session/answer-messages.ts): a large
 * part's message is encoded once and handed out again while the part is the
 * same; it decodes to the part; a small part is encoded afresh.
 */
import { describe, expect, it } from 'vitest'
import { limits } from '../core/limits.js'
import { decodeMessage } from '../core/protocol.js'
import { partMessage } from '../peers/sync-session/answer-messages.js'

describe('answer part messages', () => {
  it('encodes a large part once, as the message it is', () => {
    const part = new Uint8Array(limits.answerCachedBytesMin).fill(7)
    const step2 = partMessage('sync-step2', part)
    expect(partMessage('sync-step2', part)).toBe(step2)
    expect(decodeMessage(step2)).toEqual({ type: 'sync-step2', update: part })
    // The same part as another type is another message.
    const update = partMessage('sync-update', part)
    expect(decodeMessage(update)).toEqual({ type: 'sync-update', update: part })
    // Another part with the same bytes is encoded for itself.
    expect(partMessage('sync-step2', part.slice())).not.toBe(step2)
    const envelopes = [part, part.subarray(1)]
    const signed = partMessage('signed-step2', envelopes)
    expect(partMessage('signed-step2', envelopes)).toBe(signed)
    expect(decodeMessage(signed)).toEqual({ type: 'signed-step2', envelopes })
  })

  it('encodes a small part afresh', () => {
    const part = new Uint8Array(16).fill(1)
    const a = partMessage('sync-step2', part)
    expect(partMessage('sync-step2', part)).not.toBe(a)
    expect(partMessage('sync-step2', part)).toEqual(a)
  })
})
