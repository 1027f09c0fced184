/**
 * Costly answers made in slices (issue 11, "Amplification";
 * peers/replica/answer-turns.ts, AnswerStream.work): an untrusted peer's
 * answer that takes longer than a turn's slice goes on in later turns,
 * from where it stopped, and no part of it is made outside a turn, not
 * even for another link sharing it from the answer cache (a second link
 * asking the same would otherwise have it made at once for it). A write
 * while it is half made cuts it (AnswerStream.cut): the rest is made in
 * turns too, of the document after the write. Real server on an in-memory
 * store, parts lowered to 16 KiB.
 */
import { afterEach, describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { deletesNotSent, DIFF_STRUCTS_PER_PAUSE, diffParts } from '../core/answer-chunks.js'
import { deleteRangesOf } from '../core/delete-set.js'
import { limits } from '../core/limits.js'
import { AnswerCache, encodeParts } from '../peers/replica/answer-cache.js'
import { AnswerStream } from '../peers/replica/answer-stream.js'
import { AnswerTurns } from '../peers/replica/answer-turns.js'
import { createServer, type ServerPeer } from '../server-peer/create-server.js'
import { memoryStore } from '../storage/level-store.js'
import { eventually } from './helpers/eventually.js'
import { fakePerformanceNow } from './helpers/fake-now.js'
import { withLimits } from './helpers/limits.js'
import { putNumberedUsers } from './helpers/numbered-users.js'
import { rawLink, type RawLink } from './helpers/raw-link.js'

const KEY = 'answer-slices-key'
const USERS = 3_000
const EMPTY_VECTOR = new Uint8Array([0])
const closers: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close()
})

async function rosterServer(answerChunkBytesMax = 16 * 1024, users = USERS): Promise<ServerPeer> {
  const server = await createServer({
    store: memoryStore(),
    listen: false,
    siteKey: KEY,
    answerChunkBytesMax,
  })
  closers.push(() => server.close())
  await putNumberedUsers(server, users)
  return server
}

/**
 * Counts the steps of lazy answers (AnswerStream.lazy) taken outside
 * `work` and `workOn`, that is outside a turn: a part made at once for a link.
 */
function countStepsOutsideTurns(): { readonly outside: () => number } {
  type Internals = {
    step: (this: AnswerStream) => boolean
    work: (this: AnswerStream, index: number, deadline: number) => boolean
    workOn: (this: AnswerStream, deadline: number) => void
  }
  const proto = AnswerStream.prototype as unknown as Internals
  const { step, work, workOn } = proto
  let inWork = 0
  let outside = 0
  proto.work = function (index, deadline) {
    inWork++
    try {
      return work.call(this, index, deadline)
    } finally {
      inWork--
    }
  }
  proto.workOn = function (deadline) {
    inWork++
    try {
      workOn.call(this, deadline)
    } finally {
      inWork--
    }
  }
  proto.step = function () {
    // A step that takes something from the source (not one past its end).
    if (this.lazy && inWork === 0 && !this.complete) outside++
    return step.call(this)
  }
  closers.push(() => {
    proto.work = work
    proto.workOn = workOn
    proto.step = step
    return Promise.resolve()
  })
  return { outside: () => outside }
}

/** The document a link's answer parts (and what came after) rebuild, on `base` (an update) if given. */
function rebuilt(link: RawLink, base?: Uint8Array): Y.Doc {
  const doc = new Y.Doc()
  if (base !== undefined) Y.applyUpdate(doc, base)
  for (const message of link.received)
    if (message.type === 'sync-update' || message.type === 'sync-step2')
      Y.applyUpdate(doc, message.update)
  return doc
}

const step2s = (link: RawLink): number =>
  link.received.filter((m) => m.type === 'sync-step2').length

/** Admits `link` with an exchange that lacks nothing, so its next step 1 is the one measured. */
async function admitted(server: ServerPeer, link: RawLink): Promise<void> {
  link.send({ type: 'sync-step1', stateVector: Y.encodeStateVector(server.replica.doc) })
  await eventually(() => expect(step2s(link)).toBe(1))
  link.received.length = 0
}

/** Writes a user, and forgets the update it sent `links` (answers are looked at alone). */
async function writeUnseen(server: ServerPeer, links: readonly RawLink[]): Promise<void> {
  await server.users.put({ id: 'late', name: 'Late' })
  await eventually(() =>
    expect(links.every((l) => l.received.some((m) => m.type === 'sync-update'))).toBe(true),
  )
  for (const link of links) link.received.length = 0
}

describe('diffParts pauses', () => {
  it('yields a pause every DIFF_STRUCTS_PER_PAUSE structs, and the same parts as without them', async () => {
    const server = await rosterServer()
    const store = server.replica.doc.store
    const all = [...diffParts(store, new Map(), new Map(), 16 * 1024)]
    const pauses = all.filter((x) => x === null).length
    let structs = 0
    for (const list of store.clients.values()) structs += list.length
    expect(pauses).toBe(Math.floor(structs / DIFF_STRUCTS_PER_PAUSE))
    const doc = new Y.Doc()
    for (const part of all) if (part !== null) Y.applyUpdate(doc, part)
    expect(doc.getMap('u:server').toJSON()).toEqual(server.replica.doc.getMap('u:server').toJSON())
  })
})

describe('diffParts pauses in the delete set', () => {
  it('pauses after each delete part and every DIFF_STRUCTS_PER_PAUSE ranges', () => {
    const doc = new Y.Doc({ gc: false })
    const list = doc.getArray<number>('a')
    list.insert(
      0,
      Array.from({ length: 6000 }, (_, i) => i),
    )
    const before = Y.encodeStateAsUpdate(doc)
    // Every other item deleted: 3,000 delete ranges.
    for (let i = 5998; i >= 0; i -= 2) list.delete(i, 1)
    const deletes = deleteRangesOf(doc.store)
    const ranges = [...deletes.values()].reduce((n, r) => n + r.length, 0)
    expect(ranges).toBe(3000)
    // The receiver has every struct: the answer is the delete set alone, in
    // parts of about 200 ranges.
    const held = Y.decodeStateVector(Y.encodeStateVector(doc))
    const all = [...diffParts(doc.store, held, deletes, 4096)]
    const parts = all.filter((x): x is Uint8Array => x !== null)
    expect(parts.length).toBeGreaterThan(10)
    // A pause between every two parts, and within each run of ranges.
    for (let i = 1; i < all.length; i++)
      if (all[i] !== null && all[i - 1] !== null) throw new Error(`no pause before part at ${i}`)
    expect(all.filter((x) => x === null).length).toBeGreaterThanOrEqual(
      parts.length - 1 + Math.floor(ranges / DIFF_STRUCTS_PER_PAUSE) - 1,
    )
    // Applied to a document holding the structs, they delete what was deleted.
    const receiver = new Y.Doc({ gc: false })
    Y.applyUpdate(receiver, before)
    for (const part of parts) Y.applyUpdate(receiver, part)
    expect(receiver.getArray('a').toJSON()).toEqual(list.toJSON())
  })
})

describe('a delete set cut on its way out', () => {
  it('deletesNotSent takes out of each range what was sent, whatever the walk', () => {
    const deletes = new Map([
      [
        1,
        [
          [0, 10],
          [20, 30],
          [40, 50],
        ] as Array<readonly [number, number]>,
      ],
      [2, [[5, 8]] as Array<readonly [number, number]>],
    ])
    const sent = new Map([[1, [25, 42, 0, 3]]])
    expect(deletesNotSent(deletes, sent)).toEqual(
      new Map([
        [
          1,
          [
            [3, 10],
            [20, 25],
            [42, 50],
          ],
        ],
        [2, [[5, 8]]],
      ]),
    )
    expect(deletesNotSent(deletes, new Map([[1, [0, 50]]]))).toEqual(new Map([[2, [[5, 8]]]]))
  })

  it('goes on from the ranges sent: an answer written between every few steps still ends', () => {
    // 20k delete ranges (every other user overwritten), parts of 64 KiB.
    const doc = new Y.Doc()
    const users = doc.getMap('u')
    doc.transact(() => {
      for (let i = 0; i < 40_000; i++) users.set(`u${i}`, i)
    })
    doc.transact(() => {
      for (let i = 0; i < 40_000; i += 2) users.set(`u${i}`, -i)
    })
    const cache = new AnswerCache()
    doc.on('beforeTransaction', () => cache.settle())
    const stream = cache.get(
      'k',
      true,
      (from, sent) => encodeParts(doc, undefined, from ?? new Map(), 64 * 1024, sent),
      true,
    )
    stream.read()
    // Slices of 20 steps of the source (a few hundred ranges each), a write after each.
    const step = (stream as unknown as { step: () => boolean }).step.bind(stream)
    let writes = 0
    while (!stream.complete && writes < 200) {
      if (stream.needsResume) stream.resume()
      for (let i = 0; i < 20 && step(); i++);
      if (stream.complete) break
      users.set(`w${writes}`, writes)
      writes++
    }
    expect(stream.complete).toBe(true)
    // No larger than the document's own update but for the parts' headers.
    expect(stream.bytes).toBeLessThan(Y.encodeStateAsUpdate(doc).byteLength * 1.05)
    const copy = new Y.Doc()
    for (const part of stream.all()) {
      Y.applyUpdate(copy, part)
      expect(copy.store.pendingStructs).toBeNull()
      expect(copy.store.pendingDs).toBeNull()
    }
    expect(copy.getMap('u').toJSON()).toEqual(users.toJSON())
    expect(Y.encodeStateVector(copy)).toEqual(Y.encodeStateVector(doc))
  })
})

describe('AnswerStream.work', () => {
  it('stops at a pause once past the deadline, always making some progress, and goes on later', () => {
    const clock = fakePerformanceNow()
    const part = (n: number): Uint8Array => new Uint8Array([n])
    // Two parts, each after two pauses; every yield takes 1 ms.
    const source = (function* (): Generator<Uint8Array | null> {
      for (const value of [null, null, part(1), null, null, part(2)]) {
        clock.now += 1
        yield value
      }
    })()
    const stream = new AnswerStream(source, undefined, undefined, true)
    expect(stream.started).toBe(false)
    expect(stream.ready(0)).toBe(false)
    // Past its deadline already: one step all the same.
    expect(stream.work(0, 0)).toBe(false)
    expect(stream.started).toBe(true)
    expect(clock.now).toBe(1)
    expect(stream.work(0, 3)).toBe(false)
    expect(clock.now).toBe(3)
    expect(stream.bytes).toBe(1)
    // Ready once the part after it is made (to know whether it is the last).
    expect(stream.work(0, Infinity)).toBe(true)
    expect(stream.bytes).toBe(2)
    expect(stream.complete).toBe(false)
    expect(stream.ready(1)).toBe(false)
    expect(stream.work(1, Infinity)).toBe(true)
    expect(stream.complete).toBe(true)
    expect(stream.isLast(1)).toBe(true)
    expect(stream.ready(5)).toBe(true)
  })
})

describe('AnswerTurns: an answer begun goes on first', () => {
  it('grants a waiter going on with a begun answer before peers never served', async () => {
    const turns = new AnswerTurns((fn) => setImmediate(fn), 0)
    const granted: string[] = []
    const first = await turns.take('a', () => true)
    for (const [who, goesOn] of [
      ['new-1', false],
      ['new-2', false],
      ['a', true],
    ] as const)
      void turns
        .take(who, () => true, goesOn)
        .then((end) => {
          granted.push(who)
          end()
        })
    first()
    while (turns.size > 0 || granted.length < 3)
      await new Promise((resolve) => setImmediate(resolve))
    expect(granted).toEqual(['a', 'new-1', 'new-2'])
  })
})

describe('AnswerTurns: the pause between turns', () => {
  it('is as long as the turn when other answers wait, and none for an answer alone', async () => {
    const clock = fakePerformanceNow()
    const pauses: number[] = []
    const turns = new AnswerTurns((fn, turnMs) => {
      pauses.push(turnMs)
      setImmediate(fn)
    }, 4)
    // Alone: a turn of 5 ms ends, and no pause is owed.
    const alone = await turns.take('a', () => true)
    clock.now += 5
    alone()
    expect(pauses).toEqual([0])
    await new Promise((resolve) => setImmediate(resolve))
    // Two in the line: the first's turn of 6 ms is followed by a pause as long.
    const ends: Array<() => void> = []
    for (const who of ['b', 'c']) void turns.take(who, () => true).then((end) => ends.push(end))
    await Promise.resolve()
    clock.now += 6
    ends[0]?.()
    expect(pauses).toEqual([0, 6])
    await new Promise((resolve) => setImmediate(resolve))
    ends[1]?.()
  })
})

describe('a server making a costly answer in slices', () => {
  it('makes it over several turns, none of it outside a turn, for every link sharing it', async () => {
    // One pause's structs a turn: the answer takes many turns.
    withLimits(limits, { answerTurnSliceMs: 0.01 })
    const server = await rosterServer()
    const links = [rawLink(server, 'S0', KEY), rawLink(server, 'S1', KEY)]
    for (const link of links) await admitted(server, link)
    // A change empties the answer cache: the next answer to the empty
    // vector is costly, and made lazily.
    await writeUnseen(server, links)
    const counter = countStepsOutsideTurns()
    const granted = server.replica.answers.turnsGranted
    const encodes = server.replica.answers.encoded
    // The second asks the same while the first's answer is being made: it
    // shares it from the cache, and waits for its parts to be made in turns.
    links[0]?.send({ type: 'sync-step1', stateVector: EMPTY_VECTOR })
    // Looked at every event-loop turn: begun, and not made to the end.
    const deadline = Date.now() + 10_000
    while (server.replica.answers.turnsGranted === granted && Date.now() < deadline)
      await new Promise((resolve) => setImmediate(resolve))
    expect(server.replica.answers.turnsGranted).toBeGreaterThan(granted)
    expect(step2s(links[0] as RawLink)).toBe(0)
    links[1]?.send({ type: 'sync-step1', stateVector: EMPTY_VECTOR })
    await eventually(() => expect(links.map(step2s)).toEqual([1, 1]))
    expect(server.replica.answers.encoded - encodes).toBe(1)
    expect(server.replica.answers.turnsGranted - granted).toBeGreaterThan(2)
    expect(counter.outside()).toBe(0)
    const roster = server.replica.doc.getMap('u:server').toJSON()
    for (const link of links) {
      expect(rebuilt(link).getMap('u:server').toJSON()).toEqual(roster)
      expect(link.received.filter((m) => m.type === 'sync-update').length).toBeGreaterThan(4)
      expect(link.closed()).toBeUndefined()
    }
  })

  it('a write while it is half made cuts it: the parts made stay, the rest comes in turns from the document after it', async () => {
    // One pause's structs a turn: the answer takes many turns.
    withLimits(limits, { answerTurnSliceMs: 0.01 })
    const server = await rosterServer()
    const link = rawLink(server, 'W0', KEY)
    await admitted(server, link)
    await writeUnseen(server, [link])
    const counter = countStepsOutsideTurns()
    link.send({ type: 'sync-step1', stateVector: EMPTY_VECTOR })
    // Some of it went out; not all of it (looked at every event-loop turn).
    const deadline = Date.now() + 10_000
    while (!link.received.some((m) => m.type === 'sync-update') && Date.now() < deadline)
      await new Promise((resolve) => setImmediate(resolve))
    expect(step2s(link)).toBe(0)
    await server.users.put({ id: 'during', name: 'Written while the answer was made' })
    await server.users.delete('u1')
    await eventually(() => expect(step2s(link)).toBe(1))
    // Nothing of it was made at once at the writes.
    expect(counter.outside()).toBe(0)
    // Every part applied with nothing pending, and the answer ends with the
    // document as it is after the writes (the delete included).
    const doc = new Y.Doc()
    for (const message of link.received) {
      if (message.type !== 'sync-update' && message.type !== 'sync-step2') continue
      Y.applyUpdate(doc, message.update)
      expect(doc.store.pendingStructs).toBeNull()
      expect(doc.store.pendingDs).toBeNull()
      if (message.type === 'sync-step2') break
    }
    const roster = doc.getMap('u:server').toJSON() as Record<string, { d?: unknown }>
    expect(roster).toEqual(server.replica.doc.getMap('u:server').toJSON())
    expect(roster.during).toBeDefined()
    expect(server.users.get('u1')).toBeUndefined()
    expect(link.closed()).toBeUndefined()
  })

  it('writes coming faster than parts are made do not keep answers from finishing', async () => {
    // Parts of 256 KiB (the roster is about 300 KB) take several slices of
    // one pause's structs each; six askers, each holding the roster as it
    // was after another 500 users, so that each answer is its own and
    // costly; the server written once per turn of the event loop. Each
    // write cuts every answer: the walk since its last part is kept (one
    // more part), an answer cut while it waits for a turn keeps its place
    // in the line (resumed and made on in its turn), and a turn makes on
    // toward the end once the reader's part is ready (the rest after a
    // write is small: it ends before the next).
    withLimits(limits, { answerTurnSliceMs: 0.01 })
    const server = await rosterServer(256 * 1024, 0)
    const bases: Uint8Array[] = []
    for (let i = 0; i < USERS; i += 500) {
      bases.push(Y.encodeStateAsUpdate(server.replica.doc))
      await Promise.all(
        Array.from({ length: 500 }, (_, j) =>
          server.users.put({ id: `u${i + j}`, name: `User ${i + j}` }),
        ),
      )
    }
    const links = bases.map((_, i) => rawLink(server, `F${i}`, KEY))
    for (const link of links) await admitted(server, link)
    links.forEach((link, i) =>
      link.send({
        type: 'sync-step1',
        stateVector: Y.encodeStateVectorFromUpdate(bases[i] as Uint8Array),
      }),
    )
    let writes = 0
    const deadline = Date.now() + 20_000
    while (links.some((l) => step2s(l) === 0) && Date.now() < deadline) {
      await server.users.patch(`u${writes % USERS}`, { title: `write ${writes}` })
      writes++
      // One write per turn of the event loop (as writes coming over the
      // network would be): the memory store's resolve in microtasks alone.
      await new Promise((resolve) => setImmediate(resolve))
    }
    expect(links.map(step2s)).toEqual(links.map(() => 1))
    expect(writes).toBeGreaterThan(10)
    // Each ends with the document as it is now: what it held, its answer,
    // and the updates of the writes after it.
    const roster = server.replica.doc.getMap('u:server').toJSON()
    for (const [i, link] of links.entries()) {
      await eventually(() =>
        expect(rebuilt(link, bases[i]).getMap('u:server').toJSON()).toEqual(roster),
      )
      expect(link.closed()).toBeUndefined()
    }
  })

  it('an answer cut while it waits for its turn keeps its place, and is made on in that turn', async () => {
    withLimits(limits, { answerTurnSliceMs: 0.01 })
    const server = await rosterServer()
    const answers = server.replica.answers
    const client = server.replica.doc.clientID
    // Two costly answers, made lazily (in turns), each with its reader.
    const a = answers.parts(EMPTY_VECTOR, 0)
    const b = answers.parts(Y.encodeStateVector(new Map([[client, 5]])), 0)
    expect([a.lazy, b.lazy]).toEqual([true, true])
    const durable = (read: () => void): Promise<void> => server.replica.whenDurable(read)
    // Another answer holds the turn while both line up, A first.
    const turns = (answers as unknown as { turns: AnswerTurns }).turns
    const blocker = await turns.take('blocker', () => true)
    const order: string[] = []
    const madeA = answers.made(a, 0, 'A', durable).then(() => order.push('A'))
    const madeB = answers.made(b, 0, 'B', durable).then(() => order.push('B'))
    await server.users.put({ id: 'during', name: 'Written while they waited' })
    expect([a.needsResume, b.needsResume]).toEqual([true, true])
    blocker()
    await Promise.all([madeA, madeB])
    // Each resolved with its part ready (not when the cut made it leave
    // the line), in the order they came.
    expect([a.ready(0), b.ready(0)]).toEqual([true, true])
    expect(order).toEqual(['A', 'B'])
  })

  it('an answer the cache let go while the asker waited is made in turns too', async () => {
    const server = await rosterServer()
    const fetched = rawLink(server, 'A', KEY)
    fetched.send({ type: 'sync-step1', stateVector: EMPTY_VECTOR })
    await eventually(() => expect(step2s(fetched)).toBe(1))
    // X's answer is kept when its cost is looked at (no turn), and let go
    // before it is made: other answers push it out of the cache meanwhile
    // (as other askers' answers may while X waits for durability).
    const answers = server.replica.answers
    const client = server.replica.doc.clientID
    const turn = answers.turn.bind(answers)
    let made: AnswerStream | undefined
    let evicting = false
    answers.turn = async (theirs, who) => {
      const got = await turn(theirs, who)
      if (who === 'X' && theirs.size === 0) {
        expect(got).toBeUndefined()
        for (let k = 1; k <= limits.answersCachedMax; k++)
          answers.parts(Y.encodeStateVector(new Map([[client, k * 7]])), 0).unread()
        evicting = true
      }
      return got
    }
    const parts = answers.parts.bind(answers)
    answers.parts = (sent, lazyFrom) => {
      const stream = parts(sent, lazyFrom)
      if (evicting && made === undefined) made = stream
      return stream
    }
    const x = rawLink(server, 'X', KEY)
    await admitted(server, x)
    const counter = countStepsOutsideTurns()
    const granted = answers.turnsGranted
    x.send({ type: 'sync-step1', stateVector: EMPTY_VECTOR })
    await eventually(() => expect(step2s(x)).toBe(1))
    expect(made?.lazy).toBe(true)
    expect(answers.turnsGranted - granted).toBeGreaterThan(0)
    expect(counter.outside()).toBe(0)
    expect(rebuilt(x).getMap('u:server').toJSON()).toEqual(
      server.replica.doc.getMap('u:server').toJSON(),
    )
  })
})
