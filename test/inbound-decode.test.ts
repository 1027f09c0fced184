/**
 * A step 1's state vector at arrival (peers/sync-session/inbound.ts): its
 * size bounded from its first number, its entries read through to the end
 * (a state vector that does not decode is refused typed, at once), and no
 * map built of it before an answer is due: the answer's rates bound that
 * cost (LinkRates.answer counts the clients off the same first number).
 */
import * as encoding from 'lib0/encoding'
import { describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { netLimits } from '../core/limits.js'
import { encodeMessage } from '../core/protocol.js'
import { decodeInbound, LinkRates } from '../peers/sync-session/inbound.js'

/** A state vector of `entries`, then `extra` bytes. */
function vector(entries: Array<[number, number]>, extra: number[] = []): Uint8Array {
  const e = encoding.createEncoder()
  encoding.writeVarUint(e, entries.length)
  for (const [client, clock] of entries) {
    encoding.writeVarUint(e, client)
    encoding.writeVarUint(e, clock)
  }
  for (const b of extra) encoding.writeUint8(e, b)
  return encoding.toUint8Array(e)
}

const step1 = (stateVector: Uint8Array): Uint8Array =>
  encodeMessage({ type: 'sync-step1', stateVector })

describe('a step 1 at arrival', () => {
  it('takes a state vector that reads through to its end', () => {
    const sv = vector([
      [1, 5],
      [2 ** 40, 7],
    ])
    expect(Y.decodeStateVector(sv).size).toBe(2)
    expect(decodeInbound(step1(sv))).toMatchObject({ type: 'sync-step1' })
  })

  it('refuses, typed, one that ends early or goes on past its last entry', () => {
    const short = vector([[1, 5]]).subarray(0, 2)
    const long = vector([[1, 5]], [0x01, 0x02])
    for (const sv of [short, long])
      expect(decodeInbound(step1(sv))).toMatchObject({ code: 'MALFORMED_MESSAGE' })
  })

  it('refuses one naming too many clients from its first number alone', () => {
    const e = encoding.createEncoder()
    encoding.writeVarUint(e, netLimits.stateVectorClientsMax + 1)
    expect(decodeInbound(step1(encoding.toUint8Array(e)))).toMatchObject({
      code: 'MESSAGE_TOO_LARGE',
    })
  })

  it('counts the clients an answer costs off the first number', () => {
    let now = 0
    const rates = new LinkRates(() => now)
    const big = vector(Array.from({ length: 60_000 }, (_, i): [number, number] => [i + 1, 1]))
    const answered = [0, 1, 2, 3, 4, 5].map(() => rates.answer(big))
    // 200,000 clients a second (burst 262,144): the fifth of 60,000 is one too many.
    expect(answered.slice(0, 4)).toEqual([undefined, undefined, undefined, undefined])
    expect(answered[4]).toMatchObject({ code: 'RATE_LIMITED' })
    now += 1_000
    expect(rates.answer(big)).toBeUndefined()
  })
})
