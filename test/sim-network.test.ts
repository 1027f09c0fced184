/**
 * The simulated network: with faults off it keeps the Transport contract;
 * with faults on it loses, duplicates, reorders, clogs and cuts as told,
 * counts all of it, and replays the same delivery trace from the same seed.
 * Replay with `ROSTERSYNC_SEED=<seed> npx vitest run test/sim-network.test.ts`.
 */
import { describe, expect, it } from 'vitest'
import { hasCode } from '../core/errors.js'
import type { CloseInfo, Connection } from '../core/transport.js'
import { Prng } from '../sim/prng.js'
import { Scheduler } from '../sim/scheduler.js'
import {
  SimNetwork,
  type LinkProfile,
  type SimNetworkOptions,
  type TraceEvent,
} from '../sim/sim-network.js'
import { runTransportContract } from './contracts/transport.contract.js'

const envSeed = process.env.ROSTERSYNC_SEED
const seed =
  envSeed === undefined || envSeed === ''
    ? (Date.now() ^ (Math.random() * 0x7fffffff)) >>> 0
    : Number(envSeed)
console.log(
  `sim-network: seed ${seed} — replay: ROSTERSYNC_SEED=${seed} npx vitest run test/sim-network.test.ts`,
)

runTransportContract('simulated network, faults off', async () => {
  const scheduler = new Scheduler()
  const auto = scheduler.autoRun()
  const network = new SimNetwork({ scheduler, rng: new Prng(seed) })
  const accepted = new Promise<Connection>((resolve) =>
    network.listen('server', 'ws://sim-server', (conn) => resolve(conn)),
  )
  const a = await network.transport('device').connect('ws://sim-server/roster?device=d1')
  const b = await accepted
  return {
    a,
    b,
    cleanup: async () => {
      a.close()
      b.close()
      await auto.stop()
    },
  }
})

/** A network on a fresh scheduler. */
function setup(options: Partial<SimNetworkOptions> = {}, rngSeed = seed) {
  const scheduler = new Scheduler({ startMs: 0 })
  const network = new SimNetwork({ scheduler, rng: new Prng(rngSeed), ...options })
  return { scheduler, network }
}

/** Sends `count` numbered 2-byte messages a -> b, one per virtual ms; returns what b got. */
async function pump(
  profile: Partial<LinkProfile>,
  count: number,
  rngSeed = seed,
): Promise<{ got: number[]; network: SimNetwork; trace: TraceEvent[] }> {
  const trace: TraceEvent[] = []
  const { scheduler, network } = setup({ profile, onTrace: (e) => trace.push(e) }, rngSeed)
  const [a, b] = network.pair('a', 'b')
  const got: number[] = []
  b.onMessage((m) => got.push(((m[0] ?? 0) << 8) | (m[1] ?? 0)))
  for (let i = 0; i < count; i++) {
    scheduler.setTimeout(() => a.send(Uint8Array.of(i >> 8, i & 0xff)), i)
  }
  await scheduler.runUntil(() => false)
  return { got, network, trace }
}

describe('SimNetwork faults', () => {
  it('delivers in order with the default profile, one delay later', async () => {
    const { got, network, trace } = await pump({}, 50)
    expect(got).toEqual(Array.from({ length: 50 }, (_, i) => i))
    expect(network.stats.messages).toMatchObject({ sent: 50, delivered: 50, dropped: 0 })
    expect(trace.find((e) => e.type === 'deliver' && e.seq === 3)?.time).toBe(3 + 1)
  })

  it('loses about lossRate of the messages and counts them', async () => {
    const { got, network } = await pump({ lossRate: 0.3 }, 2000)
    const { messages, faults } = network.stats
    expect(faults.lost).toBe(2000 - got.length)
    expect(messages.dropped).toBe(faults.lost)
    expect(messages.bytesDropped).toBe(2 * faults.lost)
    expect(Math.abs(faults.lost - 600)).toBeLessThan(120)
    // What arrives is still in order: with a fixed delay, loss does not reorder.
    expect(got).toEqual([...got].sort((x, y) => x - y))
  })

  it('duplicates about duplicateRate of the messages and counts the copies', async () => {
    const { got, network } = await pump({ duplicateRate: 0.5 }, 1000)
    const { messages, faults } = network.stats
    expect(got.length).toBe(1000 + faults.duplicated)
    expect(messages.duplicated).toBe(faults.duplicated)
    expect(messages.delivered).toBe(got.length)
    expect(Math.abs(faults.duplicated - 500)).toBeLessThan(100)
    expect(new Set(got).size).toBe(1000)
  })

  it('reorders with jitter, delivering everything once and counting the inversions', async () => {
    const { got, network, trace } = await pump({ delayMs: 2, jitterMs: 20 }, 500)
    expect([...got].sort((x, y) => x - y)).toEqual(Array.from({ length: 500 }, (_, i) => i))
    expect(got).not.toEqual([...got].sort((x, y) => x - y))
    expect(network.stats.faults.reordered).toBeGreaterThan(0)
    for (const e of trace.filter((t) => t.type === 'deliver')) {
      const sent = trace.find((t) => t.type === 'send' && t.seq === e.seq)
      expect(e.time - (sent?.time ?? 0)).toBeGreaterThanOrEqual(2)
      expect(e.time - (sent?.time ?? 0)).toBeLessThanOrEqual(22)
    }
  })

  it('clogs: holds a direction for clogMs and then releases everything', async () => {
    const { scheduler, network } = setup()
    const [a, b] = network.pair('a', 'b')
    const times: number[] = []
    b.onMessage(() => times.push(scheduler.now()))
    a.onMessage(() => times.push(-scheduler.now()))
    network.clog('a', 'b', 100)
    for (let i = 0; i < 3; i++) scheduler.setTimeout(() => a.send(Uint8Array.of(i)), i * 10)
    scheduler.setTimeout(() => b.send(Uint8Array.of(9)), 5)
    await scheduler.runUntil(() => false)
    // b -> a is not clogged; a -> b comes out all at once at 100.
    expect(times).toEqual([-6, 100, 100, 100])
    expect(network.stats.faults).toMatchObject({ clogs: 1, clogged: 3 })
  })

  it('clogs at random with clogRate, delaying messages up to clogMs', async () => {
    const { got, network } = await pump({ clogRate: 0.05, clogMs: 30 }, 500)
    expect(got).toEqual(Array.from({ length: 500 }, (_, i) => i))
    expect(network.stats.faults.clogs).toBeGreaterThan(0)
    expect(network.stats.faults.clogged).toBeGreaterThan(0)
  })

  it('partitions groups both ways, drops what is on the wire, and heals', async () => {
    const { scheduler, network } = setup({ profile: { delayMs: 10 } })
    const [s1, d1] = network.pair('server', 'd1')
    const [d1b, d2] = network.pair('d1', 'd2')
    const got: string[] = []
    d1.onMessage((m) => got.push(`d1<-server ${m[0]}`))
    s1.onMessage((m) => got.push(`server<-d1 ${m[0]}`))
    d2.onMessage((m) => got.push(`d2<-d1 ${m[0]}`))
    s1.send(Uint8Array.of(1)) // on the wire when the cut comes: dropped
    await scheduler.runFor(5)
    network.partition([['server']])
    expect([network.isCut('server', 'd1'), network.isCut('d1', 'server')]).toEqual([true, true])
    expect(network.isCut('d1', 'd2')).toBe(false)
    s1.send(Uint8Array.of(2))
    d1.send(Uint8Array.of(3))
    d1b.send(Uint8Array.of(4))
    await scheduler.runFor(50)
    network.heal()
    s1.send(Uint8Array.of(5))
    await scheduler.runUntil(() => false)
    expect(got).toEqual(['d2<-d1 4', 'd1<-server 5'])
    expect(network.stats.faults).toMatchObject({ partitioned: 3, partitions: 1 })
  })

  it('cuts one direction only (asymmetric), and isolate() cuts a peer off', async () => {
    const { scheduler, network } = setup()
    const [a, b] = network.pair('a', 'b')
    const [c, a2] = network.pair('c', 'a')
    const got: string[] = []
    a.onMessage((m) => got.push(`a<-b ${m[0]}`))
    b.onMessage((m) => got.push(`b<-a ${m[0]}`))
    a2.onMessage((m) => got.push(`a<-c ${m[0]}`))
    const lift = network.cut('a', 'b')
    a.send(Uint8Array.of(1))
    b.send(Uint8Array.of(2))
    await scheduler.runUntil(() => false)
    lift()
    const unisolate = network.isolate('a')
    a.send(Uint8Array.of(3))
    c.send(Uint8Array.of(4))
    await scheduler.runUntil(() => false)
    unisolate()
    a.send(Uint8Array.of(5))
    await scheduler.runUntil(() => false)
    expect(got).toEqual(['a<-b 2', 'b<-a 5'])
  })

  it('a predicate partition blocks exactly what it returns true for', async () => {
    const { network } = setup()
    network.partition((from, to) => from.startsWith('lan1') !== to.startsWith('lan1'))
    expect(network.isCut('lan1-a', 'lan1-b')).toBe(false)
    expect(network.isCut('lan1-a', 'lan2-a')).toBe(true)
    expect(network.isCut('lan2-a', 'lan1-a')).toBe(true)
  })

  it('dials by longest address prefix, passes the full address, and fails across a cut after the timeout', async () => {
    const { scheduler, network } = setup({ profile: { delayMs: 7 }, connectTimeoutMs: 3000 })
    const seen: string[] = []
    network.listen('server', 'ws://sim-server', (_conn, address) => seen.push(`root ${address}`))
    network.listen('admin', 'ws://sim-server/admin', (_conn, address) =>
      seen.push(`admin ${address}`),
    )
    const transport = network.transport('d1')
    const outcome = async (address: string): Promise<string> => {
      const started = scheduler.now()
      try {
        const conn = await transport.connect(address)
        return `open ${conn.remote} after ${scheduler.now() - started}`
      } catch (error) {
        const code = hasCode(error, 'SYNC_FAILED') ? 'SYNC_FAILED' : String(error)
        return `${code} after ${scheduler.now() - started}`
      }
    }
    const results: string[] = []
    const run = async (address: string): Promise<void> => {
      const pending = outcome(address)
      await scheduler.runUntil(() => false)
      results.push(await pending)
    }
    await run('ws://sim-server/roster?device=d1')
    await run('ws://sim-server/admin?x=1')
    await run('ws://sim-serverX/roster')
    network.isolate('server')
    await run('ws://sim-server/roster')
    expect(seen).toEqual([
      'root ws://sim-server/roster?device=d1',
      'admin ws://sim-server/admin?x=1',
    ])
    expect(results).toEqual([
      'open server after 7',
      'open admin after 7',
      'SYNC_FAILED after 14',
      'SYNC_FAILED after 3000',
    ])
    expect(network.stats.faults.connectFailures).toBe(2)
  })

  it('a crashed peer: its listener goes, others hear 1006, and a new instance can listen again', async () => {
    const { scheduler, network } = setup()
    network.listen('server', 'ws://s', () => undefined)
    const client = await (async () => {
      const pending = network.transport('d1').connect('ws://s/r')
      await scheduler.runUntil(() => false)
      return pending
    })()
    let heard: CloseInfo | undefined
    client.onClose((info) => (heard = info))
    network.crash('server')
    await scheduler.runUntil(() => false)
    expect(heard).toEqual({ code: 1006, reason: 'connection lost' })
    expect(client.open).toBe(false)
    const refused = network
      .transport('d1')
      .connect('ws://s/r')
      .catch((error: unknown) => error)
    await scheduler.runUntil(() => false)
    expect(String(await refused)).toMatch(/refused/)
    network.listen('server', 'ws://s', () => undefined)
    const again = network.transport('d1').connect('ws://s/r')
    await scheduler.runUntil(() => false)
    expect((await again).open).toBe(true)
    expect(network.stats.faults.aborted).toBe(1)
  })

  it('with partitionCloseMs, closes connections still cut after that long (1006 both sides)', async () => {
    const { scheduler, network } = setup({ partitionCloseMs: 1000 })
    const [a, b] = network.pair('a', 'b')
    const [c, d] = network.pair('c', 'd')
    const closes: string[] = []
    a.onClose((i) => closes.push(`a ${i.code}`))
    b.onClose((i) => closes.push(`b ${i.code}`))
    c.onClose((i) => closes.push(`c ${i.code}`))
    d.onClose((i) => closes.push(`d ${i.code}`))
    network.cut('b', 'a')
    await scheduler.runUntil(() => false)
    expect(closes).toEqual(['a 1006', 'b 1006'])
    expect([a.open, b.open, c.open, d.open]).toEqual([false, false, true, true])
  })

  it('applies per-link profiles, changed on the fly', async () => {
    const { scheduler, network } = setup()
    const [a, b] = network.pair('a', 'b')
    const times: number[] = []
    b.onMessage(() => times.push(scheduler.now()))
    a.onMessage(() => times.push(-scheduler.now()))
    network.setProfile('a', 'b', { delayMs: 40 })
    a.send(Uint8Array.of(1))
    b.send(Uint8Array.of(2))
    await scheduler.runUntil(() => false)
    network.setProfile('a', 'b', { lossRate: 1 })
    a.send(Uint8Array.of(3))
    await scheduler.runUntil(() => false)
    expect(times).toEqual([-1, 40])
    expect(network.profileOf('a', 'b')).toMatchObject({ delayMs: 40, lossRate: 1 })
    expect(network.stats.faults.lost).toBe(1)
  })

  it('counts by message kind when given a classifier', async () => {
    const { scheduler, network } = setup({ classify: (m) => `type-${m[0]}` })
    const [a, b] = network.pair('a', 'b')
    b.onMessage(() => undefined)
    a.send(Uint8Array.of(0, 1, 2))
    a.send(Uint8Array.of(1))
    a.send(Uint8Array.of(0))
    await scheduler.runUntil(() => false)
    expect(network.stats.byKind.get('type-0')).toMatchObject({
      sent: 2,
      bytesSent: 4,
      delivered: 2,
    })
    expect(network.stats.byKind.get('type-1')).toMatchObject({ sent: 1, delivered: 1 })
    expect(network.stats.messages).toMatchObject({ sent: 3, bytesSent: 5, bytesDelivered: 5 })
  })

  it('replays the same delivery trace and hash from the same seed, and not from another', async () => {
    const faulty = {
      lossRate: 0.2,
      duplicateRate: 0.3,
      delayMs: 3,
      jitterMs: 15,
      clogRate: 0.02,
      clogMs: 25,
    }
    const first = await pump(faulty, 300, seed)
    const second = await pump(faulty, 300, seed)
    const other = await pump(faulty, 300, (seed + 1) >>> 0)
    expect(second.trace).toEqual(first.trace)
    expect(second.got).toEqual(first.got)
    expect(second.network.traceHash()).toBe(first.network.traceHash())
    expect(other.network.traceHash()).not.toBe(first.network.traceHash())
    expect(first.network.traceHash()).toMatch(/^[0-9a-f]{16}$/)
  })

  it('gives each connection its own stream: a new link does not change an old one', async () => {
    const run = async (extraLink: boolean): Promise<number[]> => {
      const { scheduler, network } = setup({ profile: { lossRate: 0.5 } })
      const [a, b] = network.pair('a', 'b')
      const got: number[] = []
      b.onMessage((m) => got.push(m[0] ?? -1))
      if (extraLink) {
        const [c] = network.pair('c', 'd')
        for (let i = 0; i < 50; i++) c.send(Uint8Array.of(i))
      }
      for (let i = 0; i < 50; i++) a.send(Uint8Array.of(i))
      await scheduler.runUntil(() => false)
      return got
    }
    expect(await run(true)).toEqual(await run(false))
  })
})
