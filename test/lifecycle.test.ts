/**
 * The device's sync lifecycle with a manual clock (SEMANTICS.md, "Sync
 * lifecycle"): full and delta syncs, the offline gate, status per
 * direction, retries with bounded backoff, retention, and a server that
 * cannot save. Device and server run in one process over an in-memory
 * transport; every timer goes through the manual clock. Each device reads
 * its own wall clock off it, minutes ahead of the server's or behind it
 * (issue 12), and every test runs both ways round.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { Clock } from '../core/clock.js'
import { SyncError } from '../core/errors.js'
import { generationMoveDelayMs } from '../core/backoff.js'
import { limits, netLimits } from '../core/limits.js'
import type { CloseInfo, Connection, Transport } from '../core/transport.js'
import { createDevice, type DevicePeer } from '../peers/create-device.js'
import { createServer, type ServerPeer } from '../server-peer/create-server.js'
import { FaultyStore } from '../storage/faulty-store.js'
import { memoryStore } from '../storage/level-store.js'
import { memoryPair } from '../transports/memory-transport.js'
import { KeptOpenStore } from './helpers/forwarding-store.js'
import { ManualClock, settle } from './helpers/manual-clock.js'
import { memorySite } from './helpers/memory-site.js'
import { DEVICE_SKEWS, offsetOf, skewedClock, type Skew } from './helpers/skewed-clock.js'

const SITE_KEY = 'lifecycle-site-key'
const MINUTE = 60_000
const DAY = 86_400_000
const closers: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close()
})

/** One server and its in-memory "network", which can be cut and gated. */
interface Site {
  readonly clock: ManualClock
  readonly server: ServerPeer
  readonly serverStore: FaultyStore
  readonly transport: Transport
  /** Refuse new connections and drop the open ones. */
  down(): void
  up(): void
  /** Hold the server's messages to devices until `release()`. */
  hold(): void
  release(): void
}

async function site(): Promise<Site> {
  const clock = new ManualClock()
  const serverStore = new FaultyStore(memoryStore())
  const server = await createServer({
    store: serverStore,
    clock,
    listen: false,
    siteKey: SITE_KEY,
  })
  closers.push(() => server.close())
  let isDown = false
  let holding = false
  const held: Array<() => void> = []
  const open = new Set<Connection>()
  const transport: Transport = {
    connect: async (url) => {
      if (isDown) throw new SyncError('SYNC_FAILED', 'connection refused (server down)')
      const [mine, theirs] = memoryPair('device', 'server')
      server.accept(theirs, url)
      open.add(mine)
      return gated(mine, (deliver) => {
        if (holding) held.push(deliver)
        else deliver()
      })
    },
    close: async () => undefined,
  }
  return {
    clock,
    server,
    serverStore,
    transport,
    down() {
      isDown = true
      for (const conn of open) conn.close(1006, 'network down')
      open.clear()
    },
    up() {
      isDown = false
    },
    hold() {
      holding = true
    },
    release() {
      holding = false
      for (const deliver of held.splice(0)) deliver()
    },
  }
}

/** A connection whose inbound messages pass through `gate`. */
function gated(inner: Connection, gate: (deliver: () => void) => void): Connection {
  return {
    id: inner.id,
    remote: inner.remote,
    get open() {
      return inner.open
    },
    send: (m) => inner.send(m),
    onMessage: (handler) => inner.onMessage((m) => gate(() => handler(m))),
    onClose: (handler: (info: CloseInfo) => void) => inner.onClose(handler),
    close: (code, reason) => inner.close(code, reason),
  }
}

/** A device id whose point of a generation move's spread is over a minute in. */
function lateMover(): string {
  const id = ['D1', 'D2', 'D3', 'D4', 'D5', 'D6', 'D7', 'D8'].find(
    (candidate) => generationMoveDelayMs(candidate) > 60_000,
  )
  if (id === undefined) throw new Error('no device id with a late reconnect')
  return id
}

/** The skew of the test running (set per `describe.each` round). */
let skew: Skew = { name: 'none', offsetsMs: {} }

/** Device `id`'s wall clock: the site's, skewed by this round's offset. */
const deviceClock = (clock: ManualClock, id = 'D1') => skewedClock(clock, offsetOf(skew, id))

/** What device `id`'s wall clock reads now (the times its status reports). */
const deviceNow = (s: Pick<Site, 'clock'>, id = 'D1'): number => deviceClock(s.clock, id).now()

async function device(
  s: Site,
  id = 'D1',
  extra: Partial<Parameters<typeof createDevice>[0]> = {},
): Promise<DevicePeer> {
  let n = 0
  const d = await createDevice({
    id,
    store: memoryStore(),
    clock: deviceClock(s.clock, id),
    server: 'ws://sim-server',
    serverTransport: s.transport,
    siteKey: SITE_KEY,
    // Near 1: every backoff delay is at its cap, so the bound is visible.
    randomUint32: () => 0xffffff00 + n++,
    ...extra,
  })
  closers.push(() => d.close())
  return d
}

describe.each(DEVICE_SKEWS)('$name', (round) => {
  beforeEach(() => {
    skew = round
  })

  describe('status per direction', () => {
    it('walks failed (server unreachable at first start), in-progress, success in order', async () => {
      const s = await site()
      s.down()
      await s.server.users.put({ id: 'u1', name: 'Ann' })
      const d = await device(s)
      await settle()
      // The first full sync could not reach the server: failed, with why,
      // logged once however many times the link retries.
      for (const direction of ['serverToDevice', 'deviceToServer'] as const) {
        const status = d.sync.status()[direction]
        expect(status).toMatchObject({ state: 'failed', error: { code: 'SYNC_FAILED' } })
        expect(status.error?.message).toMatch(/unreachable/)
      }
      await s.clock.advance(10 * MINUTE)
      await settle()
      expect(d.events.query({ type: 'sync-failed' })).toMatchObject([
        { code: 'SYNC_FAILED', kind: 'full' },
      ])
      s.up()
      s.hold()
      const done = d.sync.full()
      await settle()
      expect(d.sync.status().serverToDevice.state).toBe('in-progress')
      expect(d.sync.status().deviceToServer.state).toBe('in-progress')
      s.release()
      await done
      const status = d.sync.status()
      expect(status.serverToDevice).toMatchObject({ state: 'success', at: deviceNow(s) })
      expect(status.deviceToServer).toMatchObject({ state: 'success', at: deviceNow(s) })
      expect(d.users.get('u1')?.name).toBe('Ann')
      // The outage began before any round (the link failed first): the
      // round that ends it logs its start, once, and its end (a probe: a
      // success with no start).
      const types = d.events
        .query({ type: ['sync-started', 'sync-failed', 'sync-succeeded'] })
        .map((e) => e.type)
      expect(types).toEqual(['sync-failed', 'sync-started', 'sync-succeeded'])
    })

    it('says failed with the error when the server is unreachable, and a retry succeeds', async () => {
      const s = await site()
      s.down()
      const d = await device(s)
      await expect(d.sync.delta()).rejects.toMatchObject({ code: 'SYNC_FAILED' })
      expect(d.sync.status().serverToDevice).toMatchObject({
        state: 'failed',
        error: { code: 'SYNC_FAILED' },
      })
      expect(d.events.query({ type: 'sync-failed' }).length).toBeGreaterThan(0)
      s.up()
      await d.sync.full()
      expect(d.sync.status().serverToDevice.state).toBe('success')
    })

    it('logs an outage once: one sync-failed for many failed retries, then sync-succeeded', async () => {
      const s = await site()
      const d = await device(s)
      await d.sync.whenIdle()
      s.down()
      await expect(d.sync.delta()).rejects.toMatchObject({ code: 'SYNC_FAILED' })
      const failedAt: number[] = []
      for (let minute = 0; minute < 30; minute++) {
        await s.clock.advance(MINUTE)
        const status = d.sync.status().deviceToServer
        if (status.state === 'failed' && status.at !== undefined) failedAt.push(status.at)
      }
      // The retries ran (the status moved on each failure)...
      expect(new Set(failedAt).size).toBeGreaterThan(10)
      // ... but the log says it once.
      expect(d.events.query({ type: 'sync-failed' })).toHaveLength(1)
      s.up()
      await s.clock.advance(netLimits.syncRetryDelayMsMax)
      await d.sync.whenIdle()
      const types = d.events.query({ type: ['sync-started', 'sync-failed', 'sync-succeeded'] })
      expect(types.map((e) => e.type).slice(-3)).toEqual([
        'sync-started',
        'sync-failed',
        'sync-succeeded',
      ])
    })
  })

  describe('a live device that loses its server', () => {
    it('says failed and logs sync-failed once when its own retries fail, with no sync asked for; then success', async () => {
      const s = await site()
      const d = await device(s)
      await d.sync.whenIdle()
      const before = d.events.query({ type: 'sync-failed' }).length
      s.down()
      // The connection ended: not a failure yet (the next attempt decides).
      await settle(5)
      expect(d.sync.status().deviceToServer.state).toBe('success')
      await d.users.put({ id: 'u9', name: 'Offline' })
      const failedAt: number[] = []
      for (let i = 0; i < 10; i++) {
        await s.clock.advance(netLimits.syncRetryDelayMsMax)
        const status = d.sync.status()
        expect(status.deviceToServer).toMatchObject({
          state: 'failed',
          error: { code: 'SYNC_FAILED' },
        })
        expect(status.serverToDevice.state).toBe('failed')
        if (status.deviceToServer.at !== undefined) failedAt.push(status.deviceToServer.at)
      }
      // Every retry shows in the status; the outage is logged once.
      expect(new Set(failedAt).size).toBeGreaterThan(5)
      expect(d.events.query({ type: 'sync-failed' })).toHaveLength(before + 1)
      s.up()
      await s.clock.advance(netLimits.syncRetryDelayMsMax)
      await d.sync.whenIdle()
      expect(d.sync.status()).toMatchObject({
        serverToDevice: { state: 'success' },
        deviceToServer: { state: 'success' },
      })
      expect(d.events.query({ type: 'sync-succeeded' }).at(-1)?.at).toBeGreaterThan(
        Math.max(...failedAt) - 1,
      )
      expect(s.server.users.get('u9')).toEqual({ id: 'u9', name: 'Offline' })
    })
  })

  describe('a device whose clock is days off the server', () => {
    it('behind: joins in the server time after one CLOCK_SKEW refusal, and its writes are taken', async () => {
      const s = await site()
      await s.server.users.put({ id: 'u1', name: 'Ann' })
      const d = await device(s, 'D1', { clock: skewedClock(s.clock, -10 * DAY) })
      await d.sync.whenReady()
      expect(d.users.list()).toEqual([{ id: 'u1', name: 'Ann' }])
      await d.users.patch('u1', { email: 'ann@example.com' })
      await d.users.put({ id: 'u2', name: 'Bob' })
      await d.sync.whenIdle()
      expect(s.server.users.get('u1')).toMatchObject({ email: 'ann@example.com' })
      expect(s.server.users.get('u2')).toMatchObject({ name: 'Bob' })
      expect(d.sync.status()).toMatchObject({
        serverToDevice: { state: 'success' },
        deviceToServer: { state: 'success' },
      })
    })

    it('ahead: joins in the server time after one CLOCK_SKEW refusal, stamps in it, and its writes are taken', async () => {
      const s = await site()
      await s.server.users.put({ id: 'u1', name: 'Ann' })
      const d = await device(s, 'D1', { clock: skewedClock(s.clock, 10 * DAY) })
      await d.sync.whenReady()
      expect(d.users.list()).toEqual([{ id: 'u1', name: 'Ann' }])
      await d.users.patch('u1', { email: 'ann@example.com' })
      await d.users.put({ id: 'u2', name: 'Bob' })
      await d.sync.whenIdle()
      expect(s.server.users.get('u1')).toMatchObject({ email: 'ann@example.com' })
      expect(s.server.users.get('u2')).toMatchObject({ name: 'Bob' })
      expect(d.sync.status()).toMatchObject({
        serverToDevice: { state: 'success' },
        deviceToServer: { state: 'success' },
      })
      expect(s.server.events.query({ type: 'write-refused' })).toEqual([])
    })

    it('a retention wipe by the device clock alone (moved 10 days ahead), then a full sync, brings the roster back', async () => {
      const s = await site()
      await s.server.users.put({ id: 'u1', name: 'Ann' })
      let ahead = 0
      const own: Clock = {
        now: () => s.clock.now() + ahead,
        setTimeout: (fn, ms) => s.clock.setTimeout(fn, ms),
        clearTimeout: (h) => s.clock.clearTimeout(h),
      }
      const d = await device(s, 'D1', { clock: own })
      await d.sync.whenReady()
      ahead = 10 * DAY
      await s.clock.advance(10 * DAY)
      expect(d.events.query({ type: 'roster-wiped' })).toHaveLength(1)
      await d.sync.full()
      expect(d.users.list()).toEqual([{ id: 'u1', name: 'Ann' }])
    })
  })

  describe('the offline gate', () => {
    it('holds before the first full sync and lifts after it', async () => {
      const s = await site()
      await s.server.users.put({ id: 'u1', name: 'Ann' })
      s.down()
      const d = await device(s)
      await settle()
      expect(d.sync.status().offlineReady).toBe(false)
      expect(d.sync.status().warning).toMatch(/^ONLINE_ONLY/)
      // Online only: a write while the server is out of reach is refused
      // and changes nothing (SEMANTICS.md, "Offline mode").
      expect(d.sync.status().link).toBe('disconnected')
      for (const write of [
        () => d.users.put({ id: 'x1', name: 'Offline' }),
        () => d.users.patch('u1', { phone: '+1 555' }),
        () => d.users.delete('u1'),
      ])
        await expect(write()).rejects.toMatchObject({ code: 'OFFLINE_NOT_READY' })
      expect(d.users.list()).toEqual([])
      expect(d.events.query({ type: 'user-update-succeeded' })).toEqual([])
      s.up()
      await s.clock.advance(netLimits.retryDelayMsMax)
      await d.sync.whenIdle()
      expect(d.sync.status().offlineReady).toBe(true)
      expect(d.sync.status().warning).toBeUndefined()
      expect(d.users.get('u1')?.name).toBe('Ann')
      s.down()
      await settle()
      expect(d.sync.status().link).not.toBe('connected')
      expect(d.sync.status()).toMatchObject({ offlineReady: true })
      expect(d.sync.status().warning).toBeUndefined()
      // Offline-ready: it takes writes offline.
      await d.users.put({ id: 'x1', name: 'Offline' })
      expect(d.users.get('x1')?.name).toBe('Offline')
    })

    it('takes a write while the link first connects, not once an attempt failed', async () => {
      const s = await site()
      // Attempts that hang (a server that drops packets): after `refused` refusals.
      const hanging = (refused: number): Transport & { attempts: number } => {
        const transport = {
          attempts: 0,
          connect: () => {
            transport.attempts++
            return transport.attempts <= refused
              ? Promise.reject(new SyncError('SYNC_FAILED', 'connection refused'))
              : new Promise<Connection>(() => undefined)
          },
          close: async () => undefined,
        }
        return transport
      }
      const first = await device(s, 'D1', { serverTransport: hanging(0) })
      await settle()
      expect(first.sync.status().link).toBe('connecting')
      await first.users.put({ id: 'x1', name: 'While first connecting' })
      expect(first.users.get('x1')?.name).toBe('While first connecting')
      const transport = hanging(1)
      const later = await device(s, 'D2', { serverTransport: transport })
      await settle()
      await s.clock.advance(netLimits.retryDelayMsMax)
      await settle()
      expect(transport.attempts).toBe(2)
      expect(later.sync.status().link).toBe('connecting')
      await expect(later.users.put({ id: 'x2', name: 'Offline' })).rejects.toMatchObject({
        code: 'OFFLINE_NOT_READY',
      })
      expect(later.users.get('x2')).toBeUndefined()
    })

    it('holds again after a retention wipe while the server is down, from the first write (black-box probe)', async () => {
      const s = await site()
      await s.server.users.put({ id: 'u1', name: 'Ann' })
      const d = await device(s, 'D1', { retentionMs: 2 * DAY })
      await d.sync.whenReady()
      s.down()
      await s.clock.advance(2 * DAY + MINUTE)
      expect(d.events.query({ type: 'roster-wiped' })).toHaveLength(1)
      expect(d.sync.status().offlineReady).toBe(false)
      expect(d.sync.status().link).not.toBe('connected')
      // The use wakes the paused link; the write is judged before that.
      const refused = d.users.put({ id: 'x1', name: 'Offline' })
      await expect(refused).rejects.toMatchObject({ code: 'OFFLINE_NOT_READY' })
      await expect(refused).rejects.toThrow(/since its roster was wiped/)
      await expect(d.users.put({ id: 'x2', name: 'Offline' })).rejects.toMatchObject({
        code: 'OFFLINE_NOT_READY',
      })
      expect(d.users.list()).toEqual([])
    })

    it('logs the first full sync when a whenIdle() call runs it, then fetches nothing twice', async () => {
      const s = await site()
      await s.server.users.put({ id: 'u1', name: 'Ann' })
      // The connection comes up only after whenIdle() has asked for a sync.
      let open: () => void = () => undefined
      const opened = new Promise<void>((resolve) => (open = resolve))
      const slow: Transport = {
        connect: async (url) => {
          await opened
          return s.transport.connect(url)
        },
        close: async () => undefined,
      }
      const d = await device(s, 'D1', { serverTransport: slow })
      const idle = d.sync.whenIdle()
      await settle(5)
      open()
      await idle
      expect(d.users.list()).toEqual([{ id: 'u1', name: 'Ann' }])
      const logged = d.events.query({ type: ['sync-started', 'sync-succeeded'] })
      expect(logged.map((e) => [e.type, e.kind])).toEqual([
        ['sync-started', 'full'],
        ['sync-succeeded', 'full'],
      ])
    })

    it('is remembered across a restart', async () => {
      const s = await site()
      const store = memoryStore()
      const keepOpen = {
        ...store,
        get: store.get.bind(store),
        put: store.put.bind(store),
        del: store.del.bind(store),
        batch: store.batch.bind(store),
        range: store.range.bind(store),
        close: async () => undefined,
      }
      const first = await device(s, 'D1', { store: keepOpen })
      // The first full sync, run by a whenIdle() call, is logged as any full sync.
      await first.sync.whenIdle()
      expect(first.sync.status().offlineReady).toBe(true)
      const logged = first.events.query({ type: ['sync-started', 'sync-succeeded'] })
      expect(logged.map((e) => [e.type, e.kind])).toEqual([
        ['sync-started', 'full'],
        ['sync-succeeded', 'full'],
      ])
      // A delta run by whenIdle() is not (tests and apps call it often).
      await first.users.put({ id: 'u1', name: 'Ann' })
      await first.sync.whenIdle()
      expect(first.events.query({ type: ['sync-started', 'sync-succeeded'] })).toHaveLength(2)
      await first.close()
      s.down()
      // Reopened with no server (as `rostersync device --status` reads it):
      // the status says how the last logged sync ended.
      const again = await createDevice({ id: 'D1', store: keepOpen, clock: deviceClock(s.clock) })
      closers.push(() => again.close())
      expect(again.sync.status()).toMatchObject({
        offlineReady: true,
        serverToDevice: { state: 'success' },
        deviceToServer: { state: 'success' },
      })
      expect(again.sync.status().lastFullSyncAt).toBe(deviceNow(s))
      // A sync started and never ended (the log a SIGKILL during it leaves:
      // a probe found the status showing the outage before it instead).
      await again.replica.writeMeta((ctx) =>
        ctx.event({ type: 'sync-started', kind: 'full', deviceId: 'D1' }),
      )
      await again.close()
      const third = await createDevice({ id: 'D1', store: keepOpen, clock: deviceClock(s.clock) })
      closers.push(() => third.close())
      const cut = {
        state: 'failed',
        error: {
          message: expect.stringMatching(/did not end: this device stopped during it/) as unknown,
        },
      }
      expect(third.sync.status()).toMatchObject({
        offlineReady: true,
        serverToDevice: cut,
        deviceToServer: cut,
      })
    })
  })

  describe('delta sync', () => {
    it('fires deltaIntervalMs after the last completion (periodic mode)', async () => {
      const s = await site()
      const d = await device(s, 'D1', { mode: 'periodic' })
      await d.sync.whenIdle()
      const completed = deviceNow(s)
      await s.clock.advance(MINUTE)
      await s.server.users.put({ id: 'u1', name: 'Ann' })
      await s.clock.advance(30 * MINUTE - MINUTE - 1)
      expect(d.users.get('u1')).toBeUndefined()
      expect(deviceNow(s)).toBe(completed + 30 * MINUTE - 1)
      await s.clock.advance(1)
      await settle(20)
      expect(d.users.get('u1')?.name).toBe('Ann')
      const second = d.sync.status().serverToDevice.at
      expect(second).toBe(completed + 30 * MINUTE)
      // The next one is 30 minutes after that completion, not before.
      await s.server.users.patch('u1', { name: 'Anne' })
      await s.clock.advance(30 * MINUTE - 1)
      expect(d.users.get('u1')?.name).toBe('Ann')
      await s.clock.advance(1)
      await settle(20)
      expect(d.users.get('u1')?.name).toBe('Anne')
    })

    it('sends only what the other side lacks, and in periodic mode nothing between syncs', async () => {
      const s = await site()
      const d = await device(s, 'D1', { mode: 'periodic' })
      await d.sync.whenIdle()
      await d.users.put({ id: 'u7', name: 'Dev' })
      await settle()
      expect(s.server.users.get('u7')).toBeUndefined()
      await d.sync.delta()
      expect(s.server.users.get('u7')?.name).toBe('Dev')
    })

    it('going online pushes offline changes by itself (live mode)', async () => {
      const s = await site()
      const d = await device(s)
      await d.sync.whenIdle()
      s.down()
      await d.users.put({ id: 'u8', name: 'Offline' })
      expect(s.server.users.get('u8')).toBeUndefined()
      s.up()
      await s.clock.advance(netLimits.retryDelayMsMax)
      await settle(20)
      expect(s.server.users.get('u8')?.name).toBe('Offline')
    })
  })

  describe('backoff', () => {
    it('is bounded, and grows from the first retry to the bound', async () => {
      const s = await site()
      s.down()
      const d = await device(s)
      await s.clock.advance(2 * 3_600_000)
      const retries = s.clock.delays.filter((ms) => ms <= netLimits.syncRetryDelayMsMax)
      expect(Math.max(...s.clock.delays.filter((ms) => ms < 30 * MINUTE))).toBeLessThanOrEqual(
        Math.max(netLimits.retryDelayMsMax, netLimits.syncRetryDelayMsMax),
      )
      expect(retries.length).toBeGreaterThan(10)
      expect(Math.min(...retries)).toBeLessThan(2_000)
      expect(Math.max(...retries)).toBeGreaterThan(netLimits.syncRetryDelayMsMax * 0.9)
      expect(d.sync.status().deviceToServer.state).not.toBe('success')
    })
  })

  describe('full sync', () => {
    it('pushes offline changes first, then clears and fetches the whole roster', async () => {
      const s = await site()
      await s.server.users.put({ id: 'u1', name: 'Ann' })
      const d = await device(s)
      await d.sync.whenIdle()
      const before = d.replica.clientId
      s.down()
      await d.users.put({ id: 'u2', name: 'Made offline' })
      await s.server.users.put({ id: 'u3', name: 'Made on the server' })
      s.up()
      await d.sync.full()
      expect(s.server.users.get('u2')?.name).toBe('Made offline')
      expect(d.replica.clientId).not.toBe(before)
      expect(d.users.list()).toEqual(s.server.users.list())
      expect(d.users.list().map((u) => u.id)).toEqual(['u1', 'u2', 'u3'])
    })

    it('a fetch that fails after the wipe leaves the device as before, deletes and own writes shown', async () => {
      const s = await site()
      await s.server.users.put({ id: 'u1', name: 'Ann' })
      await s.server.users.put({ id: 'u2', name: 'Bob' })
      const d = await device(s)
      await d.sync.whenIdle()
      await d.users.delete('u1')
      await d.users.put({ id: 'u3', name: 'Own' })
      await d.sync.whenIdle()
      const before = d.users.list()
      expect(before.map((u) => u.id)).toEqual(['u2', 'u3'])
      // The link goes down right after the wipe: the fetch fails.
      const wipe = d.replica.wipe.bind(d.replica)
      d.replica.wipe = async (options) => {
        await wipe(options)
        s.down()
      }
      const full = d.sync.full().catch((error: unknown) => error)
      // Written while the wipe holds own writes: it lands once the wipe is undone.
      const written = d.users.put({ id: 'u4', name: 'Held' })
      await s.clock.advance(netLimits.syncAnswerTimeoutMs)
      expect(await full).toMatchObject({ code: 'SYNC_FAILED' })
      await written
      expect(d.users.list()).toEqual([...before, { id: 'u4', name: 'Held' }])
      expect(d.sync.status()).toMatchObject({ offlineReady: true })
      // The retry (a full sync again) completes it: u1 shows again (rule 3).
      d.replica.wipe = wipe
      s.up()
      await s.clock.advance(netLimits.syncRetryDelayMsMax)
      await d.sync.whenIdle()
      expect(d.sync.status().serverToDevice.state).toBe('success')
      expect(d.users.list().map((u) => u.id)).toEqual(['u1', 'u2', 'u3', 'u4'])
    })

    it('a device closed between the wipe and the fetch reopens as before', async () => {
      const clock = new ManualClock()
      const s = await memorySite(clock)
      closers.push(() => s.close())
      await s.server.users.put({ id: 'u1', name: 'Ann' })
      await s.server.users.put({ id: 'u2', name: 'Bob' })
      const d = await s.device('D1', deviceClock(clock))
      await d.sync.whenIdle()
      await d.users.delete('u1')
      await d.users.put({ id: 'u3', name: 'Own' })
      await d.sync.whenIdle()
      const before = d.users.list()
      const lastFullSyncAt = d.sync.status().lastFullSyncAt
      const wipe = d.replica.wipe.bind(d.replica)
      let closing: Promise<void> | undefined
      d.replica.wipe = async (options) => {
        await wipe(options)
        closing = d.close()
      }
      await expect(d.sync.full()).rejects.toMatchObject({ code: 'SYNC_FAILED' })
      await closing
      // The sync it cut says so: not in progress for good (black-box probe).
      // The push went through before the wipe; the fetch did not.
      const pushed = { state: 'success' }
      const cut = {
        state: 'failed',
        error: { code: 'SYNC_FAILED', message: 'the device closed before the sync ended' },
      }
      expect(d.sync.status()).toMatchObject({ serverToDevice: cut, deviceToServer: pushed })
      const again = await s.device('D1', deviceClock(clock))
      expect(again.users.list()).toEqual(before)
      expect(again.sync.status()).toMatchObject({ offlineReady: true, lastFullSyncAt })
      // Logged before the replica closed: a reopened device restores its
      // status from it (SyncStatusBook.restore), not from the sync before.
      expect(again.events.query({ type: 'sync-failed' }).at(-1)).toMatchObject({
        kind: 'full',
        deviceId: 'D1',
        direction: 'serverToDevice',
        message: cut.error.message,
      })
    })

    it('does not clear anything when the push fails', async () => {
      const s = await site()
      const d = await device(s)
      await d.sync.whenIdle()
      s.serverStore.failAll(true)
      await d.users.put({ id: 'u2', name: 'Kept' })
      await expect(d.sync.full()).rejects.toMatchObject({ code: 'SAVE_TO_SERVER_FAILED' })
      expect(d.users.get('u2')?.name).toBe('Kept')
      expect(d.sync.status().offlineReady).toBe(true)
      s.serverStore.failAll(false)
    })
  })

  describe('save-to-server-failed', () => {
    it('names the user the server refused a change of', async () => {
      const s = await site()
      // A field the device declares and its server does not: refused as invalid.
      const d = await device(s, 'D1', { customFields: { badge: 'string' } })
      await d.sync.whenIdle()
      await d.users.put({ id: 'u7', name: 'Badged', badge: 'B-7' })
      await expect(d.sync.whenIdle()).rejects.toMatchObject({ code: 'SYNC_FAILED' })
      const failed = d.events.query({ type: 'save-to-server-failed', userId: 'u7' })
      expect(failed).toHaveLength(1)
      expect(failed[0]).toMatchObject({ code: 'INVALID_RECORD', deviceId: 'D1', userId: 'u7' })
      expect(d.users.get('u7')?.badge).toBe('B-7')
      // The server's sync-failed says the same, once, its message not quoted again.
      const logged = s.server.events.query({ type: 'sync-failed', deviceId: 'D1' })
      expect(logged.map((e) => e.message?.slice(0, 30))).toEqual(['update holds an invalid record'])
    })

    it('is logged on the device, which keeps its value, and a retry saves it', async () => {
      const s = await site()
      const d = await device(s)
      await d.sync.whenIdle()
      s.serverStore.failAll(true)
      await d.users.put({ id: 'u5', name: 'Device value' })
      await settle(20)
      expect(d.events.query({ type: 'save-to-server-failed' }).length).toBeGreaterThan(0)
      expect(d.users.get('u5')?.name).toBe('Device value')
      await expect(d.sync.delta()).rejects.toMatchObject({ code: 'SAVE_TO_SERVER_FAILED' })
      expect(d.sync.status().deviceToServer).toMatchObject({
        state: 'failed',
        error: { code: 'SAVE_TO_SERVER_FAILED' },
      })
      s.serverStore.failAll(false)
      await s.clock.advance(netLimits.syncRetryDelayMsMax)
      await d.sync.whenIdle()
      expect(s.server.users.get('u5')?.name).toBe('Device value')
      expect(d.sync.status().deviceToServer.state).toBe('success')
    })
  })

  describe('a restart with unsent writes', () => {
    it('sends no write before its answer carries the unsent ones: the server refuses nothing (durability probe)', async () => {
      // Reopened under a new clientID, a device wrote while its link came
      // up: the write went before the answer that carried its offline
      // writes, built on them, and the server, finding its origin nowhere,
      // refused it FORBIDDEN_WRITE and closed the link.
      const s = await site()
      const store = new KeptOpenStore(memoryStore())
      const first = await device(s, 'D1', { store })
      await first.sync.whenIdle()
      s.down()
      for (let i = 0; i < 5; i++) await first.users.put({ id: `n${i}`, name: `offline ${i}` })
      await first.close()
      s.up()
      const again = await device(s, 'D1', { store })
      for (let i = 0; i < 5; i++) await again.users.patch(`n${i}`, { phone: String(i) })
      await again.sync.whenIdle()
      await settle(20)
      expect(s.server.events.query({ type: ['write-refused', 'sync-failed'] })).toEqual([])
      for (let i = 0; i < 5; i++) expect(s.server.users.get(`n${i}`)?.phone).toBe(String(i))
    })
  })

  describe('retention', () => {
    it('wipes at 10 days unused and not at 9, then full-syncs again once used', async () => {
      const s = await site()
      await s.server.users.put({ id: 'u1', name: 'Ann' })
      const d = await device(s)
      await d.sync.whenIdle()
      await d.users.delete('u1')
      await s.server.users.put({ id: 'u2', name: 'Bob' })
      const lastUse = s.clock.now()
      await s.clock.advance(9 * DAY)
      expect(d.replica.list().map((u) => u.id)).toEqual(['u2'])
      // (replica.events: reading through the API would count as use)
      expect(d.replica.events.query({ type: 'roster-wiped' })).toEqual([])
      expect(s.clock.now() - lastUse).toBe(9 * DAY)
      await s.clock.advance(DAY - 1)
      expect(d.replica.list().length).toBe(1)
      await s.clock.advance(1)
      await settle(20)
      expect(d.replica.list()).toEqual([])
      expect(d.replica.events.query({ type: 'roster-wiped' })).toHaveLength(1)
      expect(d.sync.status()).toMatchObject({ offlineReady: false })
      // Used again: a full sync brings the roster back (local deletes were wiped too).
      expect(d.users.list()).toEqual([])
      await d.sync.whenIdle()
      expect(d.users.list().map((u) => u.id)).toEqual(['u1', 'u2'])
      expect(d.sync.status()).toMatchObject({ offlineReady: true })
    })

    /** A periodic device (retention 2 days, no delta before it) with an edit the server lacks. */
    async function unsentEdit(): Promise<{ s: Site; d: DevicePeer }> {
      const s = await site()
      await s.server.users.put({ id: 'u1', name: 'Ann' })
      const d = await device(s, 'D1', {
        mode: 'periodic',
        retentionMs: 2 * DAY,
        deltaIntervalMs: 3 * DAY,
      })
      await d.sync.whenIdle()
      await d.users.patch('u1', { email: 'unsent@example.com' })
      return { s, d }
    }

    it("pushes a periodic device's unsent edit before the wipe (the server keeps it)", async () => {
      const { s, d } = await unsentEdit()
      await s.clock.advance(2 * DAY)
      await settle(20)
      expect(d.replica.list()).toEqual([])
      expect(d.replica.events.query({ type: 'roster-wiped' })).toHaveLength(1)
      expect(s.server.users.get('u1')?.email).toBe('unsent@example.com')
    })

    /** Advances the clock a minute at a time until `d` shows no user (at most 10 times). */
    async function untilWiped(s: Site, d: DevicePeer): Promise<void> {
      for (let i = 0; i < 10 && d.replica.list().length > 0; i++) {
        await s.clock.advance(MINUTE)
        await settle(20)
      }
      expect(d.replica.list()).toEqual([])
    }

    it('wipes when the push before it fails (server down), keeps the unsent edit, and pushes it after the next full sync', async () => {
      const { s, d } = await unsentEdit()
      s.down()
      await s.clock.advance(2 * DAY)
      await untilWiped(s, d)
      const types = d.replica.events.query({ type: ['sync-failed', 'roster-wiped'] })
      expect(types.map((e) => e.type)).toEqual(['sync-failed', 'roster-wiped'])
      expect(types[1]?.message).toMatch(
        /^unused for 2 days \(retention\); the push before it failed \(SYNC_FAILED: .*\); this device's changes the server lacked are kept, shown nowhere, and go to it after the next full sync$/,
      )
      // Shown nowhere: the roster went, the kept edit with it, until the server has it.
      expect(d.users.list()).toEqual([])
      s.up()
      await d.sync.whenIdle()
      expect(s.server.users.get('u1')?.email).toBe('unsent@example.com')
      expect(d.users.get('u1')?.email).toBe('unsent@example.com')
      // Written back once: the next sync has nothing of it to push again.
      const before = s.server.events.query({ type: 'user-update-succeeded' }).length
      await d.sync.full()
      expect(s.server.events.query({ type: 'user-update-succeeded' })).toHaveLength(before)
    })

    it('keeps only the entries the server lacks: those it acknowledged go with the roster (review)', async () => {
      const s = await site()
      await s.server.users.put({ id: 'u1', name: 'Ann' })
      await s.server.users.put({ id: 'u2', name: 'Bo' })
      const d = await device(s, 'D1', {
        retentionMs: 2 * DAY,
        mode: 'periodic',
        deltaIntervalMs: 3 * DAY,
      })
      await d.sync.whenIdle()
      await d.users.patch('u2', { email: 'acked@example.com' })
      await d.sync.whenIdle()
      await d.users.patch('u1', { email: 'unsent@example.com' })
      s.down()
      await s.clock.advance(2 * DAY)
      await untilWiped(s, d)
      const kept = d.replica.record('sync', 'retained') as Array<[string, unknown]>
      expect(kept.map(([id]) => id)).toEqual(['u1'])
    })

    it('keeps the unsent edit through a restart between the wipe and the next full sync', async () => {
      const s = await site()
      await s.server.users.put({ id: 'u1', name: 'Ann' })
      const store = new KeptOpenStore(memoryStore())
      const options = {
        store,
        retentionMs: 2 * DAY,
        mode: 'periodic',
        deltaIntervalMs: 3 * DAY,
      } as const
      const d = await device(s, 'D1', options)
      await d.sync.whenIdle()
      await d.users.patch('u1', { email: 'kept@example.com' })
      s.down()
      await s.clock.advance(2 * DAY)
      await untilWiped(s, d)
      await d.close()
      s.up()
      const again = await device(s, 'D1', options)
      expect(again.users.list()).toEqual([])
      await again.sync.whenIdle()
      expect(s.server.users.get('u1')?.email).toBe('kept@example.com')
    })

    it('drops a kept edit of a user the server deleted or enrolled again meanwhile (rule 4)', async () => {
      const { s, d } = await unsentEdit()
      await s.server.users.put({ id: 'u2', name: 'Bo' })
      await d.sync.full() // (a full sync is a use: the edit of u2 comes after it)
      await d.users.patch('u1', { phone: '555' })
      await d.users.patch('u2', { email: 'bo@example.com' })
      s.down()
      await s.clock.advance(2 * DAY)
      await untilWiped(s, d)
      await s.server.users.delete('u1')
      await s.server.users.delete('u2')
      await s.server.users.put({ id: 'u2', name: 'Bo again' })
      s.up()
      await d.sync.whenIdle()
      expect(s.server.users.get('u1')).toBeUndefined()
      expect(s.server.users.get('u2')).toEqual({ id: 'u2', name: 'Bo again' })
      expect(d.users.list()).toEqual([{ id: 'u2', name: 'Bo again' }])
    })

    it('says the unsent edit is gone when the server refuses the device (nothing would ever take it)', async () => {
      const { s, d } = await unsentEdit()
      await s.server.devices.revoke('D1')
      await d.sync.delta().catch(() => undefined)
      await s.clock.advance(2 * DAY)
      await untilWiped(s, d)
      const [wiped] = d.replica.events.query({ type: 'roster-wiped' })
      expect(wiped?.message).toBe(
        "unused for 2 days (retention); no push, the server refuses this device; what the server lacked of this device's changes is gone",
      )
    })

    it('says in the wipe that the push failed when the outage began long before it (a live device)', async () => {
      // A probe: the outage's one `sync-failed` came at its start; the
      // push before the wipe failed without a word, and the saved edit
      // went with the roster.
      const s = await site()
      await s.server.users.put({ id: 'u1', name: 'Ann' })
      const d = await device(s, 'D1', { retentionMs: 2 * DAY })
      await d.sync.whenIdle()
      s.down()
      await d.users.patch('u1', { phone: '555' })
      await s.clock.advance(MINUTE)
      await settle(20)
      expect(d.replica.events.query({ type: 'sync-failed' })).toHaveLength(1)
      await s.clock.advance(2 * DAY)
      for (let i = 0; i < 10 && d.replica.list().length > 0; i++) {
        await s.clock.advance(MINUTE)
        await settle(20)
      }
      expect(d.replica.list()).toEqual([])
      const [wiped] = d.replica.events.query({ type: 'roster-wiped' })
      expect(wiped?.message).toMatch(
        /^unused for 2 days \(retention\); the push before it failed \(.+\); this device's changes the server lacked are kept/,
      )
      s.up()
      await d.sync.whenIdle()
      expect(s.server.users.get('u1')?.phone).toBe('555')
    })

    it('counts a use made while the clock ran ahead from when it was set back, across restarts (years probe)', async () => {
      const s = await site()
      await s.server.users.put({ id: 'u1', name: 'Ann' })
      let aheadMs = 0
      const base = deviceClock(s.clock, 'D1')
      const store = new KeptOpenStore(memoryStore())
      const open = (): Promise<DevicePeer> =>
        device(s, 'D1', {
          retentionMs: 2 * DAY,
          store,
          clock: {
            now: () => base.now() + aheadMs,
            setTimeout: (fn, ms) => base.setTimeout(fn, ms),
            clearTimeout: (handle) => base.clearTimeout(handle),
          },
        })
      let d = await open()
      await d.sync.whenIdle()
      // Used while its clock ran a month ahead; the clock is set right.
      aheadMs = 30 * DAY
      expect(d.users.list()).toHaveLength(1)
      aheadMs = 0
      // Restarted every day and a half (the clamp is stored, not only kept).
      for (let restart = 0; restart < 2; restart++) {
        await s.clock.advance(1.5 * DAY)
        expect(d.replica.list()).toHaveLength(1)
        await d.close()
        d = await open()
      }
      // Gone within twice the retention of the first restart (it was kept a month more).
      await s.clock.advance(DAY)
      await settle(20)
      expect(d.replica.list()).toHaveLength(0)
    })

    it('counts a sign-in as use', async () => {
      const s = await site()
      await s.server.users.put({ id: 'u1', name: 'Ann' })
      const d = await device(s, 'D1', { retentionMs: 2 * DAY })
      await d.sync.whenIdle()
      await s.clock.advance(DAY + DAY / 2)
      await d.signIn('u1')
      // Not of a user it does not show (it logged a sign-in of nobody).
      await expect(d.signIn('nobody')).rejects.toMatchObject({ code: 'USER_NOT_FOUND' })
      expect(d.events.query({ type: 'user-signed-in' }).map((e) => e.userId)).toEqual(['u1'])
      await s.clock.advance(DAY)
      expect(d.replica.list()).toHaveLength(1)
      await s.clock.advance(DAY)
      await settle(20)
      expect(d.replica.list()).toHaveLength(0)
    })
  })

  describe('sync.whenReady: the first full sync', () => {
    it('resolves once the first full sync is done; the status says why and until when it waits', async () => {
      const s = await site()
      await s.server.users.put({ id: 'u1', name: 'Ann' })
      s.down()
      const d = await device(s)
      let ready = false
      const waiting = d.sync.whenReady().then(() => (ready = true))
      await settle()
      expect(ready).toBe(false)
      // Down: the status says why the link waits and when it tries next.
      const status = d.sync.status()
      expect(status.link).toBe('disconnected')
      expect(status.waiting).toMatch(/server down/)
      expect(status.nextAttemptAt).toBeGreaterThan(deviceNow(s))
      // A failed attempt does not reject it.
      await s.clock.advance(netLimits.retryDelayMsMax)
      expect(ready).toBe(false)
      s.up()
      await s.clock.advance(netLimits.retryDelayMsMax)
      await waiting
      expect(d.sync.status()).toMatchObject({ offlineReady: true, link: 'connected' })
      expect(d.sync.status().waiting).toBeUndefined()
      expect(d.sync.status().nextAttemptAt).toBeUndefined()
      expect(d.users.get('u1')?.name).toBe('Ann')
    })

    it('resolves at once on a device that is already ready, even offline', async () => {
      const s = await site()
      const d = await device(s)
      await d.sync.whenReady()
      s.down()
      await settle()
      let ready = false
      void d.sync.whenReady().then(() => (ready = true))
      await settle(1)
      expect(ready).toBe(true)
    })

    it('rejects when the device closes first, or has no server', async () => {
      const s = await site()
      s.down()
      const d = await device(s)
      const waiting = d.sync.whenReady()
      await settle()
      await d.close()
      await expect(waiting).rejects.toMatchObject({ code: 'SYNC_FAILED' })
      await expect(d.sync.whenReady()).rejects.toMatchObject({ code: 'SYNC_FAILED' })
      const alone = await createDevice({
        id: 'D2',
        store: memoryStore(),
        clock: deviceClock(s.clock, 'D2'),
      })
      closers.push(() => alone.close())
      await expect(alone.sync.whenReady()).rejects.toMatchObject({ code: 'NO_SERVER' })
      // Nor is it ever idle: what it writes has nowhere to go (it resolved).
      await alone.users.put({ id: 'u9', name: 'Kept here' })
      await expect(alone.sync.whenIdle()).rejects.toMatchObject({ code: 'NO_SERVER' })
    })
  })

  describe('sync.whenReady: refused for good', () => {
    it('rejects with AUTH_FAILED when the server refuses the device, waiting or asked after', async () => {
      const s = await site()
      const d = await device(s, 'D1', { siteKey: 'another-site' })
      const waiting = d.sync.whenReady()
      await expect(waiting).rejects.toMatchObject({ code: 'AUTH_FAILED' })
      expect(d.sync.status().link).toBe('refused')
      // Read as soon as whenReady() rejects, both directions say it already.
      for (const direction of [d.sync.status().serverToDevice, d.sync.status().deviceToServer])
        expect(direction).toMatchObject({ state: 'failed', error: { code: 'AUTH_FAILED' } })
      expect(d.sync.status().waiting).toMatch(/AUTH_FAILED|site key/i)
      expect(d.sync.status().nextAttemptAt).toBeUndefined()
      await expect(d.sync.whenReady()).rejects.toMatchObject({ code: 'AUTH_FAILED' })
    })
  })
})

/** Found by an audit of generations meeting the lifecycle (2026-12-06). */
describe('a generation switch meets the lifecycle', () => {
  it('a full sync that failed is the move that follows: its delete marks go (rule 3), logged as full', async () => {
    const s = await site()
    await s.server.users.put({ id: 'u1', name: 'Ann' })
    await s.server.users.put({ id: 'u2', name: 'Bob' })
    const d = await device(s)
    await d.sync.whenReady()
    await d.users.delete('u2')
    await d.sync.whenIdle()
    expect(d.users.get('u2')).toBeUndefined()
    s.down()
    await expect(d.sync.full()).rejects.toMatchObject({ code: 'SYNC_FAILED' })
    await s.server.compactHistory()
    s.up()
    // The caller's delta is the round that moves: the full sync asked for
    // (and failed) is done by it, so the user shows again.
    await d.sync.delta()
    expect(d.events.query({ type: 'generation-moved' })).toHaveLength(1)
    expect(d.users.get('u2')).toMatchObject({ name: 'Bob' })
    expect(d.users.list().map((u) => u.id)).toEqual(['u1', 'u2'])
  })

  it('wiped for retention while its move waits, the device syncs fully on its next use', async () => {
    const s = await site()
    await s.server.users.put({ id: 'u1', name: 'Ann' })
    // A device whose reconnect after the switch comes late in the spread,
    // and whose retention ends before it.
    const id = lateMover()
    const d = await device(s, id, { retentionMs: 30_000 })
    await d.sync.whenReady()
    await s.server.compactHistory()
    await settle()
    await d.users.patch('u1', { email: 'ann@device' })
    // Retention: the push reconnects (the hello asks for the move), then the wipe.
    await s.clock.advance(31_000)
    // (Through the replica: an API call would count as use.)
    expect(d.replica.events.query({ type: 'roster-wiped' })).toHaveLength(1)
    expect(s.server.users.get('u1')?.email).toBe('ann@device')
    // Waiting for use: nothing syncs, the link stays paused.
    await s.clock.advance(10_000)
    expect(d.sync.status().link).toBe('paused')
    expect(d.sync.status().offlineReady).toBe(false)
    expect(d.replica.list()).toEqual([])
    // Used: the full sync it needs runs (and moves it).
    d.users.list()
    await d.sync.whenReady()
    expect(d.sync.status().offlineReady).toBe(true)
    expect(d.users.get('u1')).toMatchObject({ email: 'ann@device' })
  })

  it('a new device whose first full sync a switch cut comes back on its backoff, not the spread', async () => {
    const s = await site()
    await s.server.users.put({ id: 'u1', name: 'Ann' })
    // A device whose point of the move's spread is late: it would wait a
    // minute or more without a roster.
    const id = lateMover()
    s.hold()
    const d = await device(s, id)
    await settle()
    expect(d.sync.status().offlineReady).toBe(false)
    // The switch closes its link (4412) before its first answer arrives.
    const start = s.clock.now()
    await s.server.compactHistory()
    s.release()
    await settle()
    // Its usual first retries (the least backoff, doubling), well within its
    // point of the spread.
    await s.clock.advance(8 * netLimits.retryDelayMsMin)
    expect(d.sync.status().offlineReady).toBe(true)
    expect(s.clock.now() - start).toBeLessThan(generationMoveDelayMs(id))
    expect(d.users.get('u1')).toMatchObject({ name: 'Ann' })
  })
})

describe('asking and closing (black-box probe)', () => {
  it('a sync asked for by hand shows in progress from the call, not from its exchange', async () => {
    const s = await site()
    const d = await device(s)
    await d.sync.whenReady()
    s.hold()
    const full = d.sync.full()
    expect(d.sync.status()).toMatchObject({
      serverToDevice: { state: 'in-progress' },
      deviceToServer: { state: 'in-progress' },
    })
    s.release()
    await full
    expect(d.sync.status()).toMatchObject({
      serverToDevice: { state: 'success' },
      deviceToServer: { state: 'success' },
    })
  })

  it('syncs under way when the device closes reject at once with SYNC_FAILED', async () => {
    // Asked for just before close(), a round started once the link was
    // closed and waited for it up to the connect timeout (30 s), or for
    // ever once the clock's timers were gone: a script never exited.
    const s = await site()
    const d = await device(s)
    await d.sync.whenReady()
    const asked = [d.sync.full(), d.sync.delta(), d.sync.whenIdle()]
    const settled = asked.map((p) =>
      p.then(
        () => 'resolved',
        (e: unknown) => (e as { code?: string }).code,
      ),
    )
    await d.close()
    const inTime = await Promise.race([
      Promise.all(settled),
      new Promise((resolve) => setTimeout(() => resolve('still pending'), 2_000)),
    ])
    expect(inTime).toEqual(['SYNC_FAILED', 'SYNC_FAILED', 'SYNC_FAILED'])
  })
})

describe("the server's event log of devices' syncs", () => {
  it('logs every full sync of a device, and its deltas at most once per serverSyncDeltaLogIntervalMs', async () => {
    // A probe: the server's log held no sync of any device (SEMANTICS.md:
    // the event log on every peer, queryable by device, has sync-started
    // and sync-succeeded).
    const s = await site()
    await s.server.users.put({ id: 'u1', name: 'Ann' })
    const d = await device(s)
    await d.sync.whenReady()
    await d.sync.whenIdle()
    const logged = (): string[] =>
      s.server.events
        .query({ type: ['sync-started', 'sync-succeeded'], deviceId: 'D1' })
        .map((e) => `${e.type} ${e.kind ?? ''}`)
    await settle()
    expect(logged()).toEqual(['sync-started full', 'sync-succeeded full'])
    // Deltas within the interval: not logged again.
    await d.sync.delta()
    await d.sync.delta()
    await settle()
    expect(logged()).toHaveLength(2)
    await s.clock.advance(limits.serverSyncDeltaLogIntervalMs)
    await d.sync.delta()
    await settle()
    expect(logged().slice(2)).toEqual(['sync-started delta', 'sync-succeeded delta'])
    // A full sync is always logged.
    await d.sync.full()
    await settle()
    expect(logged().slice(4)).toEqual(['sync-started full', 'sync-succeeded full'])
  })
})
