/**
 * A device's log of other writers' envelopes (peers/envelope-log.ts): what
 * it offers a peer is every envelope holding something that peer's state
 * vector lacks, oldest first, and nothing to a peer that lacks nothing.
 */
import { describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { EnvelopeLog } from '../peers/envelope-log.js'
import { memoryStore } from '../storage/level-store.js'

let nextKey = 0
/** One update of `doc`'s client writing `count` entries after what it holds. */
function write(doc: Y.Doc, count: number): Uint8Array {
  const before = Y.encodeStateVector(doc)
  for (let i = 0; i < count; i++) doc.getMap('u:server').set(`k${nextKey++}`, i)
  return Y.encodeStateAsUpdate(doc, before)
}

const sv = (entries: Array<[number, number]>): Map<number, number> => new Map(entries)

describe('EnvelopeLog.beyond', () => {
  it('offers the envelopes a peer lacks, oldest first, and none to a peer that lacks nothing', async () => {
    const log = await EnvelopeLog.open(memoryStore())
    const offered = (vector: Array<[number, number]>): Uint8Array[] =>
      log.beyond(sv(vector)).map((entry) => entry.bytes)
    const a = new Y.Doc()
    a.clientID = 101
    const b = new Y.Doc()
    b.clientID = 202
    const envelopes = [new Uint8Array([1]), new Uint8Array([2]), new Uint8Array([3])]
    log.add(envelopes[0] as Uint8Array, { writer: 'w', update: write(a, 2) }) // client 101: clocks 0..2
    log.add(envelopes[1] as Uint8Array, { writer: 'w', update: write(b, 3) }) // client 202: clocks 0..3
    log.add(envelopes[2] as Uint8Array, { writer: 'w', update: write(a, 1) }) // client 101: clocks 2..3
    expect(offered([])).toEqual(envelopes)
    expect(
      offered([
        [101, 3],
        [202, 3],
      ]),
    ).toEqual([])
    expect(
      offered([
        [101, 3],
        [202, 2],
      ]),
    ).toEqual([envelopes[1]])
    expect(
      offered([
        [101, 2],
        [202, 3],
      ]),
    ).toEqual([envelopes[2]])
    expect(
      offered([
        [101, 1],
        [202, 9],
      ]),
    ).toEqual([envelopes[0], envelopes[2]])
    log.clear()
    expect(offered([])).toEqual([])
    log.add(envelopes[1] as Uint8Array, { writer: 'w', update: write(b, 1) }) // client 202: clocks 3..4
    expect(offered([[202, 3]])).toEqual([envelopes[1]])
    expect(offered([[202, 4]])).toEqual([])
    await log.flushed()
  })
})
