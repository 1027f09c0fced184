/**
 * The matching of a server's answers to the device's step 1s
 * (peers/sync-session/answer-waiters.ts, AskedVectors): each answer is
 * matched to the step 1 it answers, or an older one when the server
 * answered only the last of several; never to a newer one, which would
 * claim the device held more when it asked than it did (a restore found
 * where there was none).
 */
import { describe, expect, it } from 'vitest'
import { AskedVectors } from '../peers/sync-session/answer-waiters.js'

const v = (n: number): Uint8Array => Uint8Array.of(n)

describe('AskedVectors', () => {
  it('matches answers to step 1s in the order they were sent', () => {
    const asked = new AskedVectors()
    asked.sent(v(1))
    asked.sent(v(2))
    expect(asked.answered()).toEqual(v(1))
    asked.sent(v(3))
    expect(asked.answered()).toEqual(v(2))
    expect(asked.answered()).toEqual(v(3))
    expect(asked.answered()).toBeUndefined()
  })

  it('matches an answer to an older step 1 when the server skipped one, never a newer one', () => {
    const asked = new AskedVectors()
    for (let i = 1; i <= 3; i++) asked.sent(v(i))
    // The server answered only the third: the answer is matched to the first.
    expect(asked.answered()).toEqual(v(1))
    asked.sent(v(4))
    expect(asked.answered()).toEqual(v(2))
  })

  it('gives the matching up for the connection once more step 1s wait than it keeps', () => {
    const asked = new AskedVectors(2)
    asked.sent(v(1))
    asked.sent(v(2))
    asked.sent(v(3)) // not kept: a later vector would have stood for it
    asked.sent(v(4))
    for (let i = 0; i < 4; i++) expect(asked.answered()).toBeUndefined()
    asked.sent(v(5))
    expect(asked.answered()).toBeUndefined()
  })
})
