/**
 * The bytes of answers to untrusted peers are shared (issue 11,
 * "Amplification"; peers/replica/answer-bandwidth.ts): peers that keep
 * fetching the whole roster wait for their share once the bucket is spent,
 * the least served first, while a peer sent little never waits.
 */
import { afterEach, describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { netLimits } from '../core/limits.js'
import { AnswerBandwidth, ANSWERED_HALF_LIFE_MS } from '../peers/replica/answer-bandwidth.js'
import type { ServerPeer } from '../server-peer/create-server.js'
import { eventually } from './helpers/eventually.js'
import { withLimits } from './helpers/limits.js'
import { ManualClock } from './helpers/manual-clock.js'
import { serverWithUsers } from './helpers/numbered-users.js'
import { rawLink, type RawLink } from './helpers/raw-link.js'

const KEY = 'answer-bandwidth-key'
const closers: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close()
})

describe('AnswerBandwidth', () => {
  it('lets everyone go within the burst, then holds every answer, the peer sent least lately first', async () => {
    withLimits(netLimits, {
      answerBytesBurstMax: 1_000,
      answerBytesPerSecondMax: 100_000,
      answerBytesUnwaitedMax: 100,
    })
    let now = 0
    const bandwidth = new AnswerBandwidth(() => now, true)
    const a = bandwidth.gate('A')
    const b = bandwidth.gate('B')
    // D asks deltas: sent little lately.
    const d = bandwidth.gate('D')
    expect(d.ready()).toBeUndefined()
    d.sent(50)
    // Within the burst nobody waits, however much each was sent.
    expect(a.ready()).toBeUndefined()
    a.sent(900)
    expect(b.ready()).toBeUndefined()
    b.sent(700)
    // The bucket is 600 below zero: everyone waits, even a peer sent
    // nothing yet (a made-up id), which waits as the most served (A) does.
    const order: string[] = []
    const aWaits = a.ready()
    const bWaits = b.ready()
    const c = bandwidth.gate('C')
    const cWaits = c.ready()
    expect(aWaits).toBeInstanceOf(Promise)
    expect(bWaits).toBeInstanceOf(Promise)
    expect(cWaits).toBeInstanceOf(Promise)
    expect(bandwidth.waiters).toBe(3)
    expect(bandwidth.lately('C')).toBe(bandwidth.lately('A'))
    // A known peer sent less than answerBytesUnwaitedMax lately goes at
    // once, waiters or not (charged after).
    expect(d.ready()).toBeUndefined()
    d.sent(10)
    // Each granted answer makes its message at once (as the outbox does).
    void aWaits?.then(() => {
      order.push('A')
      a.sent(10)
    })
    void bWaits?.then(() => {
      order.push('B')
      // A granted answer makes its message without asking again.
      expect(b.ready()).toBeUndefined()
      b.sent(1_500)
    })
    void cWaits?.then(() => {
      order.push('C')
      c.sent(100)
    })
    // Time refills the bucket (the timers run on the real clock; `now`
    // says how much came back): B (sent the least) goes first.
    now += 20
    await eventually(() => expect(order).toEqual(['B']))
    // B's message took the bucket below zero: A and C wait until time
    // brings it back, then go in the order they came (sent as much).
    await new Promise((resolve) => setTimeout(resolve, 30))
    expect(order).toEqual(['B'])
    now += 20
    await eventually(() => expect(order).toEqual(['B', 'A', 'C']))
    expect(bandwidth.waiters).toBe(0)
    // Counts decay: after two half-lives A is under the bound again.
    expect(bandwidth.lately('A')).toBeGreaterThan(500)
    now += 2 * ANSWERED_HALF_LIFE_MS
    expect(bandwidth.lately('A')).toBeLessThan(500)
    // A clock set back an hour reads as no time passed: the count is at
    // most what B was sent in all (700 + 1,500), not 2^120 times it.
    now -= 3_600_000
    expect(bandwidth.lately('B')).toBeLessThanOrEqual(2_200)
  })

  it('never holds anyone when off (an injected clock)', () => {
    withLimits(netLimits, { answerBytesBurstMax: 10 })
    const bandwidth = new AnswerBandwidth(() => 0, false)
    const gate = bandwidth.gate('A')
    for (let i = 0; i < 5; i++) {
      expect(gate.ready()).toBeUndefined()
      gate.sent(1_000_000)
    }
    expect(bandwidth.waiters).toBe(0)
  })

  it('lets its waiters go when closed', async () => {
    withLimits(netLimits, { answerBytesBurstMax: 10 })
    const bandwidth = new AnswerBandwidth(() => 0, true)
    const gate = bandwidth.gate('A')
    gate.sent(1_000_000)
    const waits = gate.ready()
    expect(waits).toBeInstanceOf(Promise)
    bandwidth.close()
    await waits
    expect(bandwidth.waiters).toBe(0)
  })
})

describe('a server answering peers that keep fetching the roster', () => {
  const BURST = 512 * 1024
  const RATE = 1024 * 1024
  const step2s = (link: RawLink): number =>
    link.received.filter((m) => m.type === 'sync-step2').length

  async function startServer(clock?: ManualClock): Promise<ServerPeer> {
    withLimits(netLimits, {
      answerBytesBurstMax: BURST,
      answerBytesPerSecondMax: RATE,
    })
    return serverWithUsers(KEY, 2_000, (close) => closers.push(close), clock)
  }

  /** Links that ask the whole roster again each time the last answer is in, until stopped. */
  function hogs(server: ServerPeer, count: number): { links: RawLink[]; stop: () => void } {
    const links = Array.from({ length: count }, (_, k) => rawLink(server, `hog${k}`, KEY))
    let stopped = false
    const ask = (link: RawLink): void =>
      link.send({ type: 'sync-step1', stateVector: new Uint8Array([0]) })
    for (const link of links) {
      let answered = 0
      const poll = (): void => {
        if (stopped || link.closed() !== undefined) return
        if (step2s(link) > answered) {
          answered = step2s(link)
          ask(link)
        }
        setTimeout(poll, 2)
      }
      ask(link)
      poll()
    }
    return { links, stop: () => (stopped = true) }
  }

  it('sends them at most the burst and the rate, and a newcomer and a delta are answered while they wait', async () => {
    const server = await startServer()
    const whole = Y.encodeStateAsUpdate(server.replica.doc).byteLength
    expect(whole).toBeGreaterThan(64 * 1024)
    const started = performance.now()
    const { links, stop } = hogs(server, 4)
    // Hogs spend the burst, then wait for their share.
    await eventually(() => expect(server.replica.answers.bandwidth.waiters).toBeGreaterThan(0))

    // A newcomer fetching the whole roster, and a device asking only what
    // it lacks, are answered in their turn.
    const newcomer = rawLink(server, 'newcomer', KEY)
    newcomer.send({ type: 'sync-step1', stateVector: new Uint8Array([0]) })
    const delta = rawLink(server, 'delta', KEY)
    delta.send({ type: 'sync-step1', stateVector: Y.encodeStateVector(server.replica.doc) })
    await eventually(() => expect(step2s(newcomer)).toBe(1))
    await eventually(() => expect(step2s(delta)).toBe(1))

    await new Promise((resolve) => setTimeout(resolve, 1_500))
    stop()
    const seconds = (performance.now() - started) / 1000
    const hogBytes = links.reduce((n, link) => n + link.receivedBytes(), 0)
    // What the bucket allows, plus one answer each may overshoot by (a
    // message is counted once made), plus the newcomer's; without the
    // bucket they were sent an answer as fast as they asked (tens of MB).
    const allowed = BURST + RATE * seconds + (links.length + 1) * whole * 1.1
    expect(hogBytes).toBeLessThan(allowed)
    expect(links.every((link) => link.closed() === undefined)).toBe(true)
  })

  it('on an injected clock, holds nobody', async () => {
    const server = await startServer(new ManualClock())
    const whole = Y.encodeStateAsUpdate(server.replica.doc).byteLength
    const { links, stop } = hogs(server, 2)
    // Far past the burst and the rate, none waited: a simulated run never
    // waits for a timer its clock may not fire.
    await eventually(() =>
      expect(links.reduce((n, link) => n + link.receivedBytes(), 0)).toBeGreaterThan(
        BURST + 4 * whole,
      ),
    )
    stop()
    expect(server.replica.answers.bandwidth.waiters).toBe(0)
  })
})
