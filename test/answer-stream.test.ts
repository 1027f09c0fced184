/**
 * A state-exchange answer made part by part (peers/replica/answer-stream.ts,
 * issue 13): the server no longer encodes a whole roster before its first
 * part goes out. Parts are made as they are asked for, of the document as
 * it is: a write meanwhile cuts the answer (the walk never sees the
 * structs change under it), and its rest is made of the document after
 * the write, once it is durable. Real server on an in-memory store, its part size
 * lowered to 32 KiB so that a few thousand users make many parts.
 */
import { afterEach, describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import type { CutSignal } from '../core/answer-chunks.js'
import { limits } from '../core/limits.js'
import { AnswerCache, type EncodedParts } from '../peers/replica/answer-cache.js'
import { createServer, type ServerPeer } from '../server-peer/create-server.js'
import { memoryStore } from '../storage/level-store.js'

const CHUNK_BYTES_MAX = 32 * 1024
const USERS = 3_000
const EMPTY_VECTOR = new Uint8Array([0])

let server: ServerPeer | undefined
afterEach(async () => {
  await server?.close()
  server = undefined
})

async function rosterServer(): Promise<ServerPeer> {
  const s = await createServer({
    store: memoryStore(),
    siteKey: 'answer-stream-site-key',
    answerChunkBytesMax: CHUNK_BYTES_MAX,
  })
  server = s
  await Promise.all(
    Array.from({ length: USERS }, (_, i) =>
      s.users.put({ id: `u${i}`, name: `User ${i}`, email: `user${i}@example.com` }),
    ),
  )
  return s
}

/** Parts 0, 1, ... of `stream` until the last, applied in order to a fresh document. */
function applyAll(
  stream: ReturnType<ServerPeer['replica']['answers']['parts']>,
  doc: Y.Doc,
): number {
  let i = 0
  for (;;) {
    const part = stream.part(i)
    if (part === undefined) throw new Error(`part ${i} missing`)
    Y.applyUpdate(doc, part)
    // Each part is complete given the ones before it.
    expect(doc.store.pendingStructs).toBeNull()
    if (stream.isLast(i)) return i + 1
    i++
  }
}

describe('an answer made part by part', () => {
  it('makes its parts as they are asked for, not all before the first goes out', async () => {
    const s = await rosterServer()
    const whole = s.replica.encodeDiff(EMPTY_VECTOR).byteLength
    const stream = s.replica.answers.parts(EMPTY_VECTOR)
    // Only what it takes to know it is worth keeping is made at once.
    expect(stream.complete).toBe(false)
    expect(stream.bytes).toBeLessThan(whole / 2)
    const doc = new Y.Doc()
    const count = applyAll(stream, doc)
    expect(count).toBeGreaterThan(4)
    expect(stream.complete).toBe(true)
    expect(doc.getMap('u:server').toJSON()).toEqual(s.replica.doc.getMap('u:server').toJSON())
    // The same answer, whole, is kept for the next fresh receiver.
    expect(s.replica.answers.parts(EMPTY_VECTOR)).toBe(stream)
  })

  it('a write while it is being made cuts it: the parts made stay, the rest is of the document after the write', async () => {
    const s = await rosterServer()
    const stream = s.replica.answers.parts(EMPTY_VECTOR)
    const first = stream.part(0)
    expect(first).toBeInstanceOf(Uint8Array)
    expect(stream.complete).toBe(false)
    const made = stream.bytes
    const madeParts = (stream as unknown as { made: Uint8Array[] }).made.length
    // New users, an overwrite and a delete, each its own transaction.
    await s.users.put({ id: 'late', name: 'Late' })
    await s.users.patch(`u${USERS - 1}`, { name: 'Changed' })
    await s.users.delete('u0')
    await s.users.put({ id: 'zz-later', name: 'Later' })
    // Cut before the first of them: what was walked since the last part
    // went out as one more (smaller) part, nothing else was made, and
    // nothing can be read on before it is resumed.
    expect(stream.needsResume).toBe(true)
    expect(stream.complete).toBe(false)
    expect((stream as unknown as { made: Uint8Array[] }).made.length).toBe(madeParts + 1)
    expect(stream.bytes).toBeGreaterThan(made)
    expect(stream.bytes - made).toBeLessThan(CHUNK_BYTES_MAX)
    expect(stream.part(0)).toBe(first)
    expect(() => stream.all()).toThrow(/answer cut/)
    // Resumed (inside whenDurable, as a link does): the rest is what a peer
    // holding the parts made lacks of the document now, each part applying
    // with nothing pending; together, the document as it is now.
    await s.replica.whenDurable(() => stream.resume())
    expect(stream.needsResume).toBe(false)
    const doc = new Y.Doc()
    applyAll(stream, doc)
    // The rest is only what the parts made did not bring: the answer is no
    // larger than the document now, but for its parts' headers.
    expect(stream.bytes).toBeLessThan(s.replica.encodeDiff(EMPTY_VECTOR).byteLength + 2048)
    expect(doc.store.pendingDs).toBeNull()
    expect(stream.complete).toBe(true)
    expect(doc.getMap('u:server').toJSON()).toEqual(s.replica.doc.getMap('u:server').toJSON())
    expect(doc.getMap('u:server').has('late')).toBe(true)
    // A new answer is made of the document as it is now, and is the same.
    const next = s.replica.answers.parts(EMPTY_VECTOR)
    expect(next).not.toBe(stream)
    const now = new Y.Doc()
    applyAll(next, now)
    expect(now.getMap('u:server').toJSON()).toEqual(s.replica.doc.getMap('u:server').toJSON())
  })

  it('a cut answer whose links closed before resuming it is dropped at the next change, its parts let go', async () => {
    const s = await rosterServer()
    const stream = s.replica.answers.parts(EMPTY_VECTOR)
    stream.part(0)
    await s.users.put({ id: 'late', name: 'Late' })
    expect(stream.needsResume).toBe(true)
    // Its only reader (this test, as a link would) is done with it.
    stream.unread()
    await s.users.put({ id: 'later', name: 'Later' })
    expect(stream.needsResume).toBe(false)
    expect(stream.complete).toBe(false)
    expect(() => stream.all()).toThrow(/no link reads it/)
    // Nothing is kept of it: a new answer is made afresh.
    expect(s.replica.answers.parts(EMPTY_VECTOR)).not.toBe(stream)
  })

  it('a cut answer survives a change of the document, and is dropped when the document is replaced', () => {
    const cache = new AnswerCache()
    const part = (n: number): Uint8Array => new Uint8Array(40 * 1024).fill(n)
    const covered = new Map<number, number>()
    const encode = (): EncodedParts => {
      // Stops at a cut, as diffParts does (a source that runs to its end is complete).
      const cut: CutSignal = { requested: false }
      const parts = (function* (): Generator<Uint8Array> {
        for (const n of [1, 2, 3]) {
          yield part(n)
          if (cut.requested) {
            cut.stopped = true
            return
          }
        }
      })()
      return { parts, covered, cut, deletesSent: new Map() }
    }
    const stream = cache.get('k', true, encode)
    stream.read()
    expect(stream.part(0)).toBeInstanceOf(Uint8Array)
    expect(stream.complete).toBe(false)
    cache.settle()
    expect(stream.needsResume).toBe(true)
    // A transaction that changed the document drops the kept answers, not this one's rest.
    cache.clear()
    expect(stream.needsResume).toBe(true)
    // Replaced (a wipe, a rollback): its rest cannot come from the new document.
    cache.replaced()
    expect(stream.needsResume).toBe(false)
    expect(() => stream.all()).toThrow(/the document was replaced/)
  })

  it('a lazy answer that ends small is not kept (it would push a roster out of the cache)', () => {
    const cache = new AnswerCache()
    const encode = (bytes: number) => (): EncodedParts => ({
      parts: [new Uint8Array(bytes)].values(),
      covered: new Map(),
      cut: { requested: false },
      deletesSent: new Map(),
    })
    cache.get('small', true, encode(100), true).all()
    expect(cache.kept.answers).toBe(0)
    cache.get('large', true, encode(limits.answerCachedBytesMin), true).all()
    expect(cache.kept.answers).toBe(1)
  })

  it('an answer not made to the end when the server closes is dropped, not encoded', async () => {
    const s = await rosterServer()
    const stream = s.replica.answers.parts(EMPTY_VECTOR)
    const made = stream.bytes
    await s.close()
    server = undefined
    expect(stream.complete).toBe(false)
    expect(stream.bytes).toBe(made)
    expect(() => stream.part(100)).toThrow(/the replica closed/)
  })
})
