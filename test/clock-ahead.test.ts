/**
 * A device whose clock runs ahead of its server's (a clock set days forward
 * by hand or by a test, a wrong RTC). The server refuses a stamp more than
 * `stampSkewMsMax` ahead of its clock; before, such a device could read but
 * none of its writes reached the server, even after a full sync, and a
 * write it made while ahead stayed refused after its clock was set right,
 * with every later write behind it, until real time caught up. Now the
 * device stamps in its server's time once a join shows it (CLOCK_SKEW, then
 * a signed hello), keeps that offset across restarts, and rewrites the
 * stamps of its own that ran ahead (peers/replica/restamp.ts) before it
 * sends them.
 *
 * Real parts: the server on LevelDB and WebSocket (127.0.0.1), devices on
 * LevelDB; only the devices' wall clocks are moved.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Clock } from '../core/clock.js'
import { asDeviceEntry, usersRootName } from '../core/entries.js'
import { stampMs } from '../core/hlc.js'
import { asWriterId } from '../core/ids.js'
import { limits } from '../core/limits.js'
import { createDevice, type DevicePeer } from '../peers/create-device.js'
import { createServer, type ServerPeer } from '../server-peer/create-server.js'
import { eventually } from './helpers/eventually.js'

const SITE_KEY = 'clock-ahead-key'
const DAY = 86_400_000
let dir = ''
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rostersync-clock-ahead-'))
})
afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

/** The machine's clock, `offset.ms` off (timers run on real time). */
function offsetClock(offset: { ms: number }): Clock {
  return {
    now: () => Date.now() + offset.ms,
    setTimeout: (fn, ms) => setTimeout(fn, ms),
    clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
  }
}

let serial = 0
async function site(): Promise<{ server: ServerPeer; base: string }> {
  const base = join(dir, `site-${++serial}`)
  const server = await createServer({ dataDir: join(base, 'server'), siteKey: SITE_KEY })
  await server.users.put({ id: 'u1', name: 'Ann' })
  await server.users.put({ id: 'u2', name: 'Bob' })
  return { server, base }
}

function openDevice(
  server: ServerPeer,
  base: string,
  clock: Clock,
  mode: 'live' | 'periodic' = 'periodic',
): Promise<DevicePeer> {
  return createDevice({
    id: 'D1',
    dataDir: join(base, 'device'),
    server: server.url,
    siteKey: SITE_KEY,
    clock,
    mode,
  })
}

/** The stamps (ms) of the device's own entry for `id`, by field. */
function ownStampsMs(device: DevicePeer, id: string): number[] {
  const entry = asDeviceEntry(device.replica.doc.getMap(usersRootName(asWriterId('D1'))).get(id))
  return Object.values(entry?.s ?? {}).map(stampMs)
}

/** Every own stamp of `device` is within what a server at the machine's time takes. */
function expectWithinServerBound(device: DevicePeer, ids: string[]): void {
  const bound = Date.now() + limits.stampSkewMsMax
  for (const id of ids) for (const ms of ownStampsMs(device, id)) expect(ms).toBeLessThan(bound)
  expect(stampMs(device.replica.hlcPeek())).toBeLessThan(bound)
}

describe('a device whose clock runs days ahead', () => {
  it('gets its writes to the server once a join showed it the time, after a restart too', async () => {
    const { server, base } = await site()
    const offset = { ms: 3 * DAY }
    let device = await openDevice(server, base, offsetClock(offset))
    try {
      await device.sync.full()
      expect(device.replica.stampTime.offset).toBeLessThan(-3 * DAY + 60_000)
      await device.users.patch('u1', { email: 'ann@example.com' })
      await device.users.put({ id: 'u3', name: 'Cid' })
      await device.sync.delta()
      await eventually(() => expect(server.users.get('u3')?.name).toBe('Cid'))
      expect(server.users.get('u1')?.email).toBe('ann@example.com')
      expect(server.events.query({ type: 'write-refused' })).toEqual([])
      expectWithinServerBound(device, ['u1', 'u3'])
      // Restarted with its clock still ahead, it stamps in the server's time
      // offline as well (the offset is kept).
      await device.close()
      device = await openDevice(server, base, offsetClock(offset))
      await device.users.patch('u2', { phone: '555' })
      expectWithinServerBound(device, ['u2'])
      await device.sync.delta()
      await eventually(() => expect(server.users.get('u2')?.phone).toBe('555'))
      expect(device.sync.status().deviceToServer.state).toBe('success')
    } finally {
      await device.close()
      await server.close()
    }
  }, 60_000)

  it('rewrites what it wrote offline while ahead, and its server takes it at the next sync', async () => {
    const { server, base } = await site()
    const offset = { ms: 0 }
    let device = await openDevice(server, base, offsetClock(offset))
    try {
      await device.sync.full()
      offset.ms = 3 * DAY
      // Written before any join told it the time: stamped three days ahead.
      await device.users.patch('u1', { email: 'ann@example.com' })
      await device.users.put({ id: 'u3', name: 'Cid' })
      await device.users.delete('u2')
      expect(Math.min(...ownStampsMs(device, 'u3'))).toBeGreaterThan(Date.now() + 2 * DAY)
      await device.sync.delta()
      await eventually(() => expect(server.users.get('u3')?.name).toBe('Cid'))
      expect(server.users.get('u1')?.email).toBe('ann@example.com')
      expectWithinServerBound(device, ['u1', 'u3'])
      const rewritten = device.events.query({ type: 'stamps-rewritten' })
      expect(rewritten).toHaveLength(1)
      // u1's email and u3's every field (a put writes them all); u2's
      // delete mark holds the server's stamp it hides, not one of the device's.
      expect(rewritten[0]?.message).toMatch(
        /ran ahead: \d+ stamp\(s\) of its writes for 2 user\(s\)/,
      )
      // Rule 3 still holds: the user deleted here shows again when the
      // server changes it.
      expect(device.users.get('u2')).toBeUndefined()
      await server.users.patch('u2', { title: 'Diver' })
      await device.sync.delta()
      expect(device.users.get('u2')?.title).toBe('Diver')
      expect(device.sync.status().deviceToServer.state).toBe('success')
      // Reopened, it judges others' stamps from its time again, not from
      // the future it stamped in before (the rewound wall is stored).
      await device.close()
      device = await openDevice(server, base, offsetClock(offset))
      expect(device.replica.stampTime.horizon()).toBeLessThan(Date.now() + 60_000)
      expectWithinServerBound(device, ['u1', 'u3'])
    } finally {
      await device.close()
      await server.close()
    }
  }, 60_000)

  it('connected live, its clock moved ahead: its writes get through', async () => {
    const { server, base } = await site()
    const offset = { ms: 0 }
    const device = await openDevice(server, base, offsetClock(offset), 'live')
    try {
      await device.sync.full()
      offset.ms = 2 * DAY
      await device.users.put({ id: 'u3', name: 'Cid' })
      await eventually(() => expect(server.users.get('u3')?.name).toBe('Cid'), 30_000)
      await device.users.patch('u3', { phone: '556' })
      await eventually(() => expect(server.users.get('u3')?.phone).toBe('556'), 30_000)
      expectWithinServerBound(device, ['u3'])
    } finally {
      await device.close()
      await server.close()
    }
  }, 60_000)
})

describe('a device that wrote while its clock ran ahead and back, connected all along', () => {
  it('rewrites those writes before its next sync pushes them: nothing is refused', async () => {
    const { server, base } = await site()
    const offset = { ms: 0 }
    const device = await openDevice(server, base, offsetClock(offset))
    try {
      await device.sync.full()
      // No join in between: the device cannot learn the time; its clock
      // is right again by the time it syncs.
      offset.ms = 4 * DAY
      await device.users.put({ id: 'u3', name: 'Cid' })
      offset.ms = 0
      await device.sync.delta()
      expect(server.users.get('u3')?.name).toBe('Cid')
      expect(server.events.query({ type: 'write-refused' })).toEqual([])
      expect(device.events.query({ type: 'sync-failed' })).toEqual([])
      expectWithinServerBound(device, ['u3'])
    } finally {
      await device.close()
      await server.close()
    }
  }, 60_000)
})

describe('a device that wrote while its clock ran ahead, then restarted with it set right', () => {
  it('rewrites those writes before it sends them, and the server takes them', async () => {
    const { server, base } = await site()
    const offset = { ms: 0 }
    let device = await openDevice(server, base, offsetClock(offset))
    try {
      await device.sync.full()
      await device.close()
      // Off the network: reopened with no server to reach.
      offset.ms = 5 * DAY
      device = await createDevice({
        id: 'D1',
        dataDir: join(base, 'device'),
        server: 'ws://127.0.0.1:9/unreachable',
        siteKey: SITE_KEY,
        clock: offsetClock(offset),
        mode: 'periodic',
      })
      await device.users.put({ id: 'u3', name: 'Cid' })
      await device.close()
      offset.ms = 0
      device = await openDevice(server, base, offsetClock(offset))
      await device.sync.delta()
      await eventually(() => expect(server.users.get('u3')?.name).toBe('Cid'))
      expectWithinServerBound(device, ['u3'])
      expect(device.replica.stampTime.offset).toBe(0)
      expect(server.events.query({ type: 'write-refused' })).toEqual([])
      // Later writes go as well: its clock no longer counts from the future.
      await device.users.patch('u3', { phone: '557' })
      await device.sync.delta()
      await eventually(() => expect(server.users.get('u3')?.phone).toBe('557'))
      // The rewound clock is what is stored: reopened, it neither stamps
      // nor judges others' stamps from the future it was in.
      await device.close()
      device = await openDevice(server, base, offsetClock(offset))
      expectWithinServerBound(device, ['u3'])
      expect(device.replica.stampTime.horizon()).toBeLessThan(Date.now() + 60_000)
    } finally {
      await device.close()
      await server.close()
    }
  }, 60_000)
})
