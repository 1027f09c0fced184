/**
 * Costly answers take turns (issue 11, "Amplification";
 * peers/replica/answer-turns.ts): step 1s that each name a different clock
 * of the server's miss the answer cache and make the server encode nearly
 * the whole roster every time. Several untrusted links asking so at once
 * are answered one per event-loop turn, with the poll for I/O between, and
 * not all in the turn they arrived in; answers that cost little or come
 * from the cache are answered at once.
 */
import { afterEach, describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { limits } from '../core/limits.js'
import { AnswerTurns } from '../peers/replica/answer-turns.js'
import type { ServerPeer } from '../server-peer/create-server.js'
import { eventually } from './helpers/eventually.js'
import { fakePerformanceNow } from './helpers/fake-now.js'
import { withLimits } from './helpers/limits.js'
import { ManualClock } from './helpers/manual-clock.js'
import { serverWithUsers } from './helpers/numbered-users.js'
import { rawLink, type RawLink } from './helpers/raw-link.js'

const KEY = 'answer-turns-key'
const closers: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close()
})

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

/** `names` waiting for a turn, in that order: who was granted so far, and each one's end. */
function lineUp(
  turns: AnswerTurns,
  names: readonly string[],
): { granted: string[]; ends: Map<string, () => void> } {
  const granted: string[] = []
  const ends = new Map<string, () => void>()
  for (const name of names)
    void turns
      .take(name, () => true)
      .then((end) => {
        granted.push(name)
        ends.set(name, end)
      })
  return { granted, ends }
}

describe('AnswerTurns', () => {
  it('grants one at a time, the next only in a later event-loop turn, first come first served', async () => {
    // A slice of 0 ms: every answer ends its turn.
    const turns = new AnswerTurns((fn) => setImmediate(fn), 0)
    const { granted: order, ends: releases } = lineUp(turns, ['a', 'b', 'c'])
    await Promise.resolve()
    expect(order).toEqual(['a'])
    expect(turns.size).toBe(2)
    // Held: nothing else is granted however many turns go by.
    await nextTurn()
    await nextTurn()
    expect(order).toEqual(['a'])
    releases.get('a')?.()
    releases.get('a')?.() // a second release changes nothing
    // Not in the same turn (microtasks included)...
    for (let i = 0; i < 5; i++) await Promise.resolve()
    expect(order).toEqual(['a'])
    // ...but in the next.
    await nextTurn()
    expect(order).toEqual(['a', 'b'])
    releases.get('b')?.()
    await nextTurn()
    expect(order).toEqual(['a', 'b', 'c'])
    releases.get('c')?.()
    await nextTurn()
    expect(turns.size).toBe(0)
    // Free again: the next is granted at once.
    const release = await turns.take('d', () => true)
    expect(turns.granted).toBe(4)
    release()
  })
})

describe('AnswerTurns with answers that became cheap', () => {
  it('lets a waiter whose answer is no longer costly go at once, without a turn', async () => {
    const turns = new AnswerTurns((fn) => setImmediate(fn), 0)
    let cached = false
    const order: string[] = []
    const first = await turns.take('a', () => true)
    void turns.take('b', () => !cached).then(() => order.push('same answer'))
    void turns.take('c', () => true).then(() => order.push('other answer'))
    await nextTurn()
    expect(order).toEqual([])
    // The answer the first made is the second's too: it goes as the first
    // ends, before the next turn; the third waits for that turn.
    cached = true
    first()
    await Promise.resolve()
    expect(order).toEqual(['same answer'])
    await nextTurn()
    expect(order).toEqual(['same answer', 'other answer'])
    expect(turns.granted).toBe(2)
  })
})

describe('AnswerTurns: slices and who goes next', () => {
  it('makes answers one after another while the turn lasts its slice, then waits for the next turn', async () => {
    const clock = fakePerformanceNow()
    const turns = new AnswerTurns((fn) => setImmediate(fn), 10)
    const { granted, ends } = lineUp(turns, ['a', 'b', 'c', 'd'])
    await Promise.resolve()
    expect(granted).toEqual(['a'])
    clock.now = 4 // a took 4 ms of the 10 ms slice: b goes in the same turn
    ends.get('a')?.()
    await Promise.resolve()
    expect(granted).toEqual(['a', 'b'])
    clock.now = 12 // the turn took 12 ms: c waits for the next turn
    ends.get('b')?.()
    for (let i = 0; i < 5; i++) await Promise.resolve()
    expect(granted).toEqual(['a', 'b'])
    await nextTurn()
    expect(granted).toEqual(['a', 'b', 'c'])
    ends.get('c')?.()
    await nextTurn()
    ends.get('d')?.()
  })

  it('serves the peer served least recently first: a newcomer goes before peers asking all along', async () => {
    const turns = new AnswerTurns((fn) => setImmediate(fn), 0)
    const granted: string[] = []
    let flooding = true
    const ask = (who: string): void => {
      void turns
        .take(who, () => true)
        .then((end) => {
          granted.push(who)
          // Answered, it asks again at once (a flooding link), and ends its turn.
          if (flooding && who.startsWith('flood')) ask(who)
          setImmediate(end)
        })
    }
    for (let i = 0; i < 5; i++) ask(`flood-${i}`)
    // Every flooding peer served once, round and round.
    while (granted.length < 8) await nextTurn()
    expect(granted.slice(0, 5)).toEqual(['flood-0', 'flood-1', 'flood-2', 'flood-3', 'flood-4'])
    expect(granted.slice(5, 8)).toEqual(['flood-0', 'flood-1', 'flood-2'])
    // An honest device behind asks: next, not after the five.
    ask('honest')
    const at = granted.length
    while (granted.length < at + 2) await nextTurn()
    expect(granted.slice(at, at + 2)).toContain('honest')
    expect(granted.indexOf('honest')).toBeLessThanOrEqual(at + 1)
    flooding = false
    while (turns.size > 0) await nextTurn()
  })
})

describe('a server answering costly step 1s', () => {
  const USERS = 3_000

  async function startServer(clock?: ManualClock): Promise<ServerPeer> {
    return serverWithUsers(KEY, USERS, (close) => closers.push(close), clock)
  }

  /** A state vector naming only `client` at `clock`. */
  const vectorAt = (client: number, clock: number): Uint8Array =>
    Y.encodeStateVector(new Map([[client, clock]]))

  const step2s = (link: RawLink): number =>
    link.received.filter((m) => m.type === 'sync-step2').length

  it('answers them one per event-loop turn, every one of them', async () => {
    // A slice of 0 ms: each answer ends its turn (they are made several
    // to a turn of 10 ms otherwise).
    withLimits(limits, { answerTurnSliceMs: 0 })
    const server = await startServer()
    const [[client, clock]] = [...Y.decodeStateVector(Y.encodeStateVector(server.replica.doc))]
      .sort((a, b) => b[1] - a[1])
      .slice(0, 1) as [[number, number]]
    expect(clock).toBeGreaterThanOrEqual(USERS)
    const links = Array.from({ length: 8 }, (_, k) => rawLink(server, `D${k}`, KEY))
    // Admitted and answered once: a step 1 that lacks nothing.
    for (const link of links)
      link.send({ type: 'sync-step1', stateVector: Y.encodeStateVector(server.replica.doc) })
    await eventually(() => expect(links.every((l) => step2s(l) === 1)).toBe(true))
    const before = links.map(step2s)
    const granted = server.replica.answers.turnsGranted
    const encodedBefore = server.replica.answers.encoded

    // Answers made per turn of the event loop, counted from a check-phase
    // callback that runs once a turn.
    let perTurnMax = 0
    let last = encodedBefore
    let ticking = true
    const tick = (): void => {
      const now = server.replica.answers.encoded
      perTurnMax = Math.max(perTurnMax, now - last)
      last = now
      if (ticking) setImmediate(tick)
    }
    setImmediate(tick)
    // Each link asks from its own clock of the server's: 8 answers the
    // cache cannot share, each costing more than answerTurnCostMin.
    links.forEach((link, k) =>
      link.send({ type: 'sync-step1', stateVector: vectorAt(client, 1 + 7 * k) }),
    )
    await eventually(() => expect(links.map(step2s)).toEqual(before.map((n) => n + 1)))
    ticking = false
    expect(server.replica.answers.encoded - encodedBefore).toBe(8)
    expect(perTurnMax).toBe(1)
    expect(server.replica.answers.turnsGranted - granted).toBe(8)
    expect(links.every((l) => l.closed() === undefined)).toBe(true)

    // Asked again, the same answers come from the cache, without a turn;
    // so do small ones (a device catching up on a few edits).
    links[0]?.send({ type: 'sync-step1', stateVector: vectorAt(client, 1 + 7 * 7) })
    links[1]?.send({
      type: 'sync-step1',
      stateVector: vectorAt(client, clock - limits.answerTurnCostMin + 100),
    })
    await eventually(() => expect(step2s(links[0] as RawLink)).toBe((before[0] ?? 0) + 2))
    await eventually(() => expect(step2s(links[1] as RawLink)).toBe((before[1] ?? 0) + 2))
    expect(server.replica.answers.turnsGranted - granted).toBe(8)
  })

  it('on an injected clock that never moves, every costly answer still goes out', async () => {
    const server = await startServer(new ManualClock())
    const client = [...Y.decodeStateVector(Y.encodeStateVector(server.replica.doc)).keys()][0]
    const links = Array.from({ length: 4 }, (_, k) => rawLink(server, `M${k}`, KEY))
    const granted = server.replica.answers.turnsGranted
    links.forEach((link, k) =>
      link.send({ type: 'sync-step1', stateVector: vectorAt(client as number, 1 + k) }),
    )
    await eventually(() => expect(links.map(step2s)).toEqual([1, 1, 1, 1]))
    expect(server.replica.answers.turnsGranted - granted).toBe(4)
  })

  it('a herd asking the same answer (fresh devices after a restart) shares one encode and one turn', async () => {
    // A slice of 0 ms: the answer is made whole in its turn (in slices of
    // 4 ms it takes as many turns as it needs, however many ask).
    withLimits(limits, { answerTurnSliceMs: 0 })
    const server = await startServer()
    const links = Array.from({ length: 20 }, (_, k) => rawLink(server, `H${k}`, KEY))
    for (const link of links)
      link.send({ type: 'sync-step1', stateVector: Y.encodeStateVector(server.replica.doc) })
    await eventually(() => expect(links.every((l) => step2s(l) === 1)).toBe(true))
    // A change empties the answer cache; then every link asks for everything at once.
    await server.users.put({ id: 'late', name: 'Late' })
    const encodes = server.replica.answers.encoded
    const granted = server.replica.answers.turnsGranted
    for (const link of links) link.send({ type: 'sync-step1', stateVector: new Uint8Array([0]) })
    await eventually(() => expect(links.every((l) => step2s(l) === 2)).toBe(true))
    expect(server.replica.answers.encoded - encodes).toBe(1)
    expect(server.replica.answers.turnsGranted - granted).toBe(1)
  })
})
