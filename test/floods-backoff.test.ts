/**
 * Reconnect traffic (issue 11, item 5): the backoff only grows until a link
 * succeeds (automatic retries never reset it, a manual sync tries once
 * without resetting it), so an unreachable server sees about one attempt
 * per half minute from a device, not one every few seconds; after a server
 * restart (1001) devices come back spread over at least 30 s. Virtual time
 * only: counts, never timings.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { restartReconnectDelayMs, retryDelayMs } from '../core/backoff.js'
import { SyncError } from '../core/errors.js'
import { asWriterId } from '../core/ids.js'
import { netLimits } from '../core/limits.js'
import { RecordSchema } from '../core/schema.js'
import type { Connection, Transport } from '../core/transport.js'
import type { Clock } from '../core/clock.js'
import { createDevice, type DevicePeer } from '../peers/create-device.js'
import { Replica } from '../peers/replica.js'
import { connectToServer } from '../peers/ws-client.js'
import { Prng } from '../sim/prng.js'
import { memoryStore } from '../storage/level-store.js'
import { memoryPair } from '../transports/memory-transport.js'
import { ManualClock, settle } from './helpers/manual-clock.js'
import { seedFromEnv } from './helpers/property-seed.js'

const DAY = 86_400_000
const closers: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close()
})

/** A manual clock that also counts the timers that fired (wake-ups). */
class CountingClock extends ManualClock {
  wakeUps = 0
  override setTimeout(fn: () => void, ms: number): unknown {
    return super.setTimeout(() => {
      this.wakeUps++
      fn()
    }, ms)
  }
}

/** Device D1 whose server link goes through `transport`, on `clock`, closed after the test. */
async function deviceOn(transport: Transport, clock: Clock, prng: Prng): Promise<DevicePeer> {
  const device = await createDevice({
    id: 'D1',
    store: memoryStore(),
    clock,
    server: 'ws://sim-server',
    serverTransport: transport,
    siteKey: 'k',
    randomUint32: () => prng.nextUint32(),
  })
  closers.push(() => device.close())
  return device
}

/** Doublings of the first delay until the cap, plus one. */
const RAMP = Math.ceil(Math.log2(netLimits.retryDelayMsMax / netLimits.retryDelayMsMin)) + 1

describe('backoff delays (pure)', () => {
  it('stay within [cap / 2, cap] and reach the bound', () => {
    for (let attempt = 0; attempt < 40; attempt++) {
      const cap = Math.min(netLimits.retryDelayMsMax, netLimits.retryDelayMsMin * 2 ** attempt)
      for (const random of [0, 0.5, 0.999_999, -1, 2, Number.NaN]) {
        const delay = retryDelayMs(attempt, random)
        expect(delay).toBeGreaterThanOrEqual(cap / 2)
        expect(delay).toBeLessThanOrEqual(cap)
      }
    }
    expect(retryDelayMs(RAMP, 0)).toBe(netLimits.retryDelayMsMax / 2)
  })

  it("after a restart, 1,000 devices' delays spread over at least 30 s", () => {
    const seed = seedFromEnv()
    console.log(`restart spread: seed ${seed} (replay: ROSTERSYNC_SEED=${seed})`)
    const prng = new Prng(seed)
    const delays = Array.from({ length: 1_000 }, () =>
      restartReconnectDelayMs(prng.nextUint32() / 2 ** 32),
    )
    expect(Math.min(...delays)).toBeGreaterThanOrEqual(0)
    expect(Math.max(...delays)).toBeLessThan(netLimits.reconnectAfterRestartSpreadMs)
    expect(Math.max(...delays) - Math.min(...delays)).toBeGreaterThanOrEqual(30_000)
  })
})

describe("a device's link", () => {
  it('reconnects after a 1001 close with a delay drawn over the restart spread', async () => {
    const clock = new ManualClock()
    const replica = await Replica.open({
      store: memoryStore(),
      writerId: asWriterId('D1'),
      clock,
      schema: new RecordSchema(),
      randomUint32: () => 12_345,
    })
    closers.push(() => replica.close())
    const servers: Connection[] = []
    const link = connectToServer({
      replica,
      url: 'ws://sim-server',
      deviceId: 'D1',
      name: 'D1',
      siteKey: 'k',
      clock,
      random: () => 0.9,
      connect: async () => {
        const [mine, theirs] = memoryPair('device', 'server')
        servers.push(theirs)
        return mine
      },
    })
    closers.push(() => link.close())
    await settle()
    expect(link.state).toBe('connected')
    const before = clock.delays.length
    servers[0]?.close(1001, 'server closing')
    await settle()
    expect(link.state).toBe('disconnected')
    expect(clock.delays.slice(before)).toEqual([restartReconnectDelayMs(0.9)])
    await clock.advance(restartReconnectDelayMs(0.9) - 1)
    expect(servers).toHaveLength(1)
    await clock.advance(1)
    expect(servers).toHaveLength(2)
  })
})

describe('a device whose server is unreachable for a day', () => {
  it('tries about once per half of the backoff bound, and a manual sync does not reset it', async () => {
    const seed = seedFromEnv()
    console.log(`unreachable day: seed ${seed} (replay: ROSTERSYNC_SEED=${seed})`)
    const prng = new Prng(seed)
    const clock = new CountingClock()
    let connects = 0
    const transport: Transport = {
      connect: async () => {
        connects++
        throw new SyncError('SYNC_FAILED', 'connection refused (server down)')
      },
      close: async () => undefined,
    }
    const device = await deviceOn(transport, clock, prng)
    // A sync that fails starts the sync's own retries as well as the link's.
    await expect(device.sync.delta()).rejects.toMatchObject({ code: 'SYNC_FAILED' })
    for (let hour = 0; hour < 24; hour++) await clock.advance(DAY / 24)
    // The link's own retries: one per retryDelayMsMax / 2 at most once the
    // cap is reached. The automatic sync retries never make it try sooner.
    const perDay = DAY / (netLimits.retryDelayMsMax / 2)
    console.log(`a day unreachable: ${connects} connection attempts, ${clock.wakeUps} wake-ups`)
    expect(connects).toBeGreaterThan(perDay / 2)
    expect(connects).toBeLessThanOrEqual(RAMP + perDay)
    // Wake-ups: the link's timers and the sync's retry timers, each bounded
    // the same way (plus the retention check).
    const syncPerDay = DAY / (netLimits.syncRetryDelayMsMax / 2)
    expect(clock.wakeUps).toBeLessThanOrEqual(2 * RAMP + perDay + syncPerDay + 10)
    expect(device.sync.status().deviceToServer.state).toBe('failed')
    // A manual sync tries once now, and the next automatic attempt is
    // still at the bound.
    const attempts = connects
    const delays = clock.delays.length
    await expect(device.sync.delta()).rejects.toMatchObject({ code: 'SYNC_FAILED' })
    await settle()
    expect(connects).toBe(attempts + 1)
    const after = clock.delays.slice(delays)
    expect(after.length).toBeGreaterThan(0)
    expect(Math.min(...after)).toBeGreaterThanOrEqual(netLimits.retryDelayMsMax / 2)
  })
})

describe('join proofs of attempts that never connect', () => {
  it('are sent again while fresh, one signed per joinUrlReuseMsMax; one that connected never is', async () => {
    const seed = seedFromEnv()
    console.log(`join proof reuse: seed ${seed} (replay: ROSTERSYNC_SEED=${seed})`)
    const prng = new Prng(seed)
    const clock = new ManualClock()
    const urls: string[] = []
    let reachable = false
    const servers: Connection[] = []
    const transport: Transport = {
      connect: async (url) => {
        urls.push(url)
        if (!reachable) throw new SyncError('SYNC_FAILED', 'connection refused (server down)')
        const [mine, theirs] = memoryPair('device', 'server')
        servers.push(theirs)
        return mine
      },
      close: async () => undefined,
    }
    await deviceOn(transport, clock, prng)
    const proofOf = (url: string | undefined): string | null =>
      new URL(url ?? 'ws://x').searchParams.get('proof')
    const HOURS = 6
    for (let step = 0; step < HOURS * 60; step++) await clock.advance(60_000)
    const proofs = new Set(urls.map(proofOf))
    console.log(
      `${HOURS} h unreachable: ${urls.length} attempts, ${proofs.size} join proofs signed`,
    )
    expect(proofs.has(null)).toBe(false)
    // Attempts keep coming at the backoff's pace, each proof reused while fresh.
    expect(urls.length).toBeGreaterThan((HOURS * 3_600_000) / netLimits.retryDelayMsMax)
    expect(proofs.size).toBeLessThanOrEqual(
      Math.ceil((HOURS * 3_600_000) / netLimits.joinUrlReuseMsMax) + 1,
    )
    expect(proofs.size).toBeGreaterThanOrEqual(
      (HOURS * 3_600_000) / netLimits.joinUrlReuseMsMax / 2,
    )
    // Consecutive attempts with one proof are never further apart than the bound.
    const at = (url: string): number => Number(new URL(url).searchParams.get('at'))
    for (const url of urls) {
      const first = urls.find((u) => proofOf(u) === proofOf(url))
      expect(at(url)).toBe(at(first ?? url))
    }
    // Reachable: the next attempt connects; once a connection opened, its
    // proof reached the server and is never sent again.
    reachable = true
    await clock.advance(netLimits.retryDelayMsMax)
    expect(servers).toHaveLength(1)
    const connected = proofOf(urls.at(-1))
    const attempts = urls.length
    servers[0]?.close(1006, 'dropped')
    reachable = false
    await clock.advance(netLimits.retryDelayMsMax)
    expect(urls.length).toBeGreaterThan(attempts)
    expect(proofOf(urls.at(-1))).not.toBe(connected)
  })
})
