/**
 * Every event type SEMANTICS.md requires ("Event log"), asserted with its
 * fields on the peer that produces it, at the peer's injected clock time;
 * and the retention check at start-up: a device restarted after its
 * retention period starts wiped, before it shows anything, and one
 * restarted just before it does not. The device reads its own wall
 * clock, minutes ahead of the server's or behind it (issue 12), both ways
 * round: each event carries the time of the peer that logged it.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { RosterEvent } from '../core/events.js'
import { netLimits } from '../core/limits.js'
import { DEFAULT_RETENTION_MS } from '../peers/create-device.js'
import { ManualClock, settle } from './helpers/manual-clock.js'
import { memorySite, type MemorySite } from './helpers/memory-site.js'
import { DEVICE_SKEWS, offsetOf, skewedClock, type Skew } from './helpers/skewed-clock.js'

const HOUR = 3_600_000
const sites: MemorySite[] = []
afterEach(async () => {
  for (const s of sites.splice(0).reverse()) await s.close()
})

async function site(clock: ManualClock, options = {}): Promise<MemorySite> {
  const s = await memorySite(clock, options)
  sites.push(s)
  return s
}

/** The skew of the test running (set per `describe.each` round). */
let skew: Skew = { name: 'none', offsetsMs: {} }

/** Device D1's wall clock: the test's, skewed by this round's offset. */
const deviceClock = (clock: ManualClock) => skewedClock(clock, offsetOf(skew, 'D1'))

/** The events without their position and time, to compare whole. */
const bare = (events: readonly RosterEvent[]): Array<Omit<RosterEvent, 'seq' | 'at'>> =>
  events.map(({ seq: _seq, at: _at, ...rest }) => rest)

describe.each(DEVICE_SKEWS)('$name', (round) => {
  beforeEach(() => {
    skew = round
  })

  describe('events on the server', () => {
    it('user-update-succeeded (origin server) and policy-changed, with their fields and time', async () => {
      const clock = new ManualClock()
      const s = await site(clock, { fieldPolicies: { phone: 'device-specific' } })
      expect(bare(s.server.events.query({ type: 'policy-changed' }))).toEqual([
        { type: 'policy-changed', fields: ['phone'], message: 'phone is now device-specific' },
      ])
      await s.server.users.put({ id: 'u1', name: 'Ann', email: 'ann@example.com' })
      const updates = s.server.events.query({ type: 'user-update-succeeded' })
      expect(bare(updates)).toEqual([
        {
          type: 'user-update-succeeded',
          origin: 'server',
          userId: 'u1',
          fields: ['name', 'email'],
        },
      ])
      expect(updates[0]?.at).toBe(clock.now())
      await clock.advance(1_000)
      await s.server.setFieldPolicies({ title: 'last-writer-wins', phone: 'device-specific' })
      const policies = s.server.events.query({ type: 'policy-changed' })
      // A policy set to what it already is changes nothing and logs nothing.
      expect(bare(policies)).toEqual([
        { type: 'policy-changed', fields: ['phone'], message: 'phone is now device-specific' },
        { type: 'policy-changed', fields: ['title'], message: 'title is now last-writer-wins' },
      ])
      expect(policies[1]?.at).toBe(clock.now())
    })

    it('device-registered once per device, device-revoked, and the adoption of a device fill', async () => {
      const clock = new ManualClock()
      const s = await site(clock)
      const d = await s.device('D1', deviceClock(clock), { name: 'Front door' })
      await d.sync.whenIdle()
      const registered = s.server.events.query({ type: 'device-registered' })
      expect(bare(registered)).toEqual([{ type: 'device-registered', deviceId: 'D1' }])
      expect(registered[0]?.at).toBe(clock.now())
      // Reconnecting is not registering again.
      s.down()
      s.up()
      await d.sync.whenIdle()
      expect(s.server.events.query({ type: 'device-registered' })).toHaveLength(1)

      await d.users.put({ id: 'u2', name: 'Bob' })
      await d.sync.whenIdle()
      expect(bare(s.server.events.query({ type: 'user-update-succeeded' }))).toEqual([
        {
          type: 'user-update-succeeded',
          origin: 'device',
          userId: 'u2',
          deviceId: 'D1',
          fields: ['name'],
        },
      ])

      expect(await s.server.devices.revoke('D1')).toBe(true)
      expect(bare(s.server.events.query({ type: 'device-revoked' }))).toEqual([
        { type: 'device-revoked', deviceId: 'D1' },
      ])
    })
  })

  describe('events on a device', () => {
    it('user-update-succeeded (origin device), edit-overridden-by-server, user-deleted-locally', async () => {
      const clock = new ManualClock()
      const s = await site(clock)
      await s.server.users.put({ id: 'u1', name: 'Ann' })
      const d = await s.device('D1', deviceClock(clock))
      await d.sync.whenIdle()
      await d.users.patch('u1', { name: 'Not Ann', phone: '+1 555' })
      expect(bare(d.events.query({ type: 'user-update-succeeded' }))).toEqual([
        {
          type: 'user-update-succeeded',
          origin: 'device',
          userId: 'u1',
          deviceId: 'D1',
          fields: ['name', 'phone'],
        },
      ])
      // The server holds a name: the device's is overridden (rule 1), its phone fills (rule 2).
      expect(bare(d.events.query({ type: 'edit-overridden-by-server' }))).toEqual([
        { type: 'edit-overridden-by-server', userId: 'u1', deviceId: 'D1', fields: ['name'] },
      ])
      await d.users.delete('u1')
      const deleted = d.events.query({ type: 'user-deleted-locally' })
      expect(bare(deleted)).toEqual([
        { type: 'user-deleted-locally', userId: 'u1', deviceId: 'D1' },
      ])
      expect(deleted[0]?.at).toBe(deviceClock(clock).now())
      // Local only: the server logs no delete.
      await d.sync.whenIdle()
      expect(s.server.events.query({ type: ['user-deleted-locally', 'user-deleted'] })).toEqual([])
    })

    it('sync-started, sync-succeeded, sync-failed and save-to-server-failed', async () => {
      const clock = new ManualClock()
      const s = await site(clock)
      const d = await s.device('D1', deviceClock(clock), { mode: 'periodic' })
      await d.sync.whenIdle()
      const before = d.events.query().length
      await d.sync.full()
      expect(bare(d.events.query().slice(before))).toEqual([
        { type: 'sync-started', kind: 'full', deviceId: 'D1' },
        { type: 'sync-succeeded', kind: 'full', deviceId: 'D1' },
      ])
      // Named as its user events are: a query by device finds its syncs.
      expect(d.events.query({ type: 'sync-succeeded', deviceId: 'D1' }).length).toBeGreaterThan(0)

      s.down()
      const failedFrom = deviceClock(clock).now()
      const failing = d.sync.delta().catch((error: unknown) => error)
      await clock.advance(netLimits.syncConnectTimeoutMs)
      expect(await failing).toMatchObject({ code: 'SYNC_FAILED' })
      const failed = d.events.query({ type: 'sync-failed' })
      expect(failed[0]?.message).toMatch(/unreachable/)
      expect(bare(failed)).toEqual([
        {
          type: 'sync-failed',
          kind: 'delta',
          deviceId: 'D1',
          code: 'SYNC_FAILED',
          message: failed[0]?.message,
        },
      ])
      expect(failed[0]?.at).toBeGreaterThanOrEqual(failedFrom)
      expect(failed[0]?.at).toBeLessThanOrEqual(deviceClock(clock).now())

      s.up()
      s.serverStore.failAll(true)
      await d.users.put({ id: 'u5', name: 'Kept' })
      await expect(d.sync.delta()).rejects.toMatchObject({ code: 'SAVE_TO_SERVER_FAILED' })
      const saves = d.events.query({ type: 'save-to-server-failed' })
      expect(saves.length).toBeGreaterThan(0)
      expect(saves[0]?.message).toMatch(/./)
      expect(bare(saves)[0]).toEqual({
        type: 'save-to-server-failed',
        deviceId: 'D1',
        code: 'STORAGE_FAILED',
        message: saves[0]?.message,
      })
      expect(d.users.get('u5')?.name).toBe('Kept')
      s.serverStore.failAll(false)
    })

    it('save-to-server-failed when the server refuses the change, once per code, the value kept (black-box probe)', async () => {
      // A device declaring a field its server does not: the server refuses
      // the change (INVALID_RECORD). Only sync-failed was logged.
      const clock = new ManualClock()
      const s = await site(clock)
      await s.server.users.put({ id: 'u1', name: 'Ann' })
      const d = await s.device('D1', deviceClock(clock), { customFields: { badge: 'string' } })
      await d.sync.whenIdle()
      await d.users.patch('u1', { badge: 'B7' })
      await expect(d.sync.delta()).rejects.toMatchObject({ code: 'SYNC_FAILED' })
      // Retried on the backoff: refused again, logged once.
      await clock.advance(netLimits.syncRetryDelayMsMax * 3)
      const saves = d.events.query({ type: 'save-to-server-failed' })
      expect(bare(saves)).toEqual([
        {
          type: 'save-to-server-failed',
          deviceId: 'D1',
          // Named, as the server's write-refused names it: a query by user finds it.
          userId: 'u1',
          code: 'INVALID_RECORD',
          message: saves[0]?.message,
        },
      ])
      expect(d.users.get('u1')).toMatchObject({ badge: 'B7' })
      expect(s.server.users.get('u1')).toEqual({ id: 'u1', name: 'Ann' })
      // The server's log names the user the refused entry was for: a query
      // by user finds it (it found only the user's updates).
      expect(s.server.events.query({ type: 'write-refused', userId: 'u1' })).toMatchObject([
        { deviceId: 'D1', code: 'INVALID_RECORD' },
      ])
    })
  })

  describe('a failure that outlasts a restart', () => {
    it('is logged once, not again at every open of the device', async () => {
      const clock = new ManualClock()
      const s = await site(clock)
      const first = await s.device('D1', deviceClock(clock))
      await first.sync.whenIdle()
      await s.server.devices.revoke('D1')
      await first.sync.delta().catch(() => undefined)
      expect(first.replica.events.query({ type: 'sync-failed' })).toHaveLength(1)
      await first.close()
      for (let open = 0; open < 3; open++) {
        const again = await s.device('D1', deviceClock(clock))
        await again.sync.delta().catch(() => undefined)
        expect(again.sync.status().deviceToServer.error?.code).toBe('PEER_REVOKED')
        expect(again.replica.events.query({ type: 'sync-failed' })).toHaveLength(1)
        await again.close()
      }
    })
  })

  describe('the retention check at start-up', () => {
    /**
     * A terminal used offline (its server down) with an edit, then opened
     * again past its retention, its server `up` at that boot or not.
     */
    async function bootPastRetention(up: boolean) {
      const clock = new ManualClock()
      const s = await site(clock)
      await s.server.users.put({ id: 'u1', name: 'Ann' })
      const first = await s.device('D1', deviceClock(clock))
      await first.sync.whenIdle()
      s.down()
      await first.users.patch('u1', { email: 'offline@d1.example' })
      await first.close()
      if (up) s.up()
      await clock.advance(DEFAULT_RETENTION_MS + HOUR)
      const late = await s.device('D1', deviceClock(clock))
      /** Moves the clock 10 ms at a time while `going` holds (at most 200 times). */
      const whileGoing = async (going: () => boolean): Promise<void> => {
        for (let i = 0; i < 200 && going(); i++) {
          await clock.advance(10)
          await settle(5)
        }
      }
      return { s, late, whileGoing }
    }

    it('pushes first the changes of its own its server lacks, then wipes (a clock set right at its boot)', async () => {
      // A terminal used offline while its clock ran days behind, set right
      // at its next boot, looked unused for longer than its retention: its
      // wipe at once took its acknowledged offline write (a probe).
      const { s, late, whileGoing } = await bootPastRetention(true)
      await whileGoing(() => s.server.users.get('u1')?.email === undefined)
      expect(s.server.users.get('u1')?.email).toBe('offline@d1.example')
      await whileGoing(() => late.replica.list().length > 0)
      expect(late.replica.list()).toEqual([])
      expect(late.replica.events.query({ type: 'roster-wiped' })).toHaveLength(1)
    })

    it('keeps those changes through the wipe when its network is not up at boot, and pushes them once used', async () => {
      // The same terminal, booting before its network is up: the push
      // failed, and the wipe took the saved write (left open, session 27).
      const { s, late, whileGoing } = await bootPastRetention(false)
      await whileGoing(() => late.replica.list().length > 0)
      expect(late.replica.list()).toEqual([])
      const [wiped] = late.replica.events.query({ type: 'roster-wiped' })
      expect(wiped?.message).toMatch(
        /push before it failed .*; this device's changes the server lacked are kept/,
      )
      s.up()
      await late.sync.whenIdle()
      expect(s.server.users.get('u1')?.email).toBe('offline@d1.example')
      expect(late.users.get('u1')?.email).toBe('offline@d1.example')
    })

    it('wipes a device restarted after its retention period, before it shows anything', async () => {
      const clock = new ManualClock()
      const s = await site(clock)
      await s.server.users.put({ id: 'u1', name: 'Ann' })
      const first = await s.device('D1', deviceClock(clock))
      await first.sync.whenIdle()
      // (Through the replica: reading through the API counts as use.)
      expect(first.replica.list()).toHaveLength(1)
      const lastUse = first.sync.status().lastUsedAt
      await first.close()

      // Off for an hour less than the retention period (10 days): kept.
      await clock.advance(lastUse + DEFAULT_RETENTION_MS - HOUR - deviceClock(clock).now())
      const early = await s.device('D1', deviceClock(clock))
      expect(early.replica.list()).toHaveLength(1)
      expect(early.replica.events.query({ type: 'roster-wiped' })).toEqual([])
      expect(early.sync.status()).toMatchObject({ offlineReady: true })
      await early.close()

      // Off for the retention period: wiped by the time createDevice resolves.
      await clock.advance(HOUR)
      const late = await s.device('D1', deviceClock(clock))
      expect(late.replica.list()).toEqual([])
      const wiped = late.replica.events.query({ type: 'roster-wiped' })
      expect(bare(wiped)).toEqual([
        { type: 'roster-wiped', message: 'unused for 10 days (retention)' },
      ])
      expect(wiped[0]?.at).toBe(deviceClock(clock).now())
      expect(late.sync.status().offlineReady).toBe(false)
      expect(late.sync.status().warning).toMatch(/^ONLINE_ONLY/)
      // It stays wiped until used; used, it full-syncs again.
      await settle(20)
      expect(late.replica.list()).toEqual([])
      expect(late.users.list()).toEqual([])
      await late.sync.whenIdle()
      expect(late.users.list()).toEqual([{ id: 'u1', name: 'Ann' }])
      expect(late.sync.status()).toMatchObject({ offlineReady: true })
    })
  })
})
