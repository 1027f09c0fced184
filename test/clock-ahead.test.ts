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
import { once } from 'node:events'
import { mkdtemp, rm } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket, { WebSocketServer } from 'ws'
import type { Clock } from '../core/clock.js'
import { asDeviceEntry, usersRootName } from '../core/entries.js'
import { stampMs } from '../core/hlc.js'
import { asUserId, asWriterId } from '../core/ids.js'
import { limits } from '../core/limits.js'
import { createDevice, type DevicePeer } from '../peers/create-device.js'
import { createServer, type ServerPeer } from '../server-peer/create-server.js'
import { eventually } from './helpers/eventually.js'
import { offsetClock } from './helpers/skewed-clock.js'

const SITE_KEY = 'clock-ahead-key'
const DAY = 86_400_000
let dir = ''
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rostersync-clock-ahead-'))
})
afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

let serial = 0
async function site(): Promise<{ server: ServerPeer; base: string }> {
  const base = join(dir, `site-${++serial}`)
  const server = await createServer({
    dataDir: join(base, 'server'),
    siteKey: SITE_KEY,
    fieldPolicies: { pin: 'device-specific' },
  })
  await server.users.put({ id: 'u1', name: 'Ann' })
  await server.users.put({ id: 'u2', name: 'Bob' })
  return { server, base }
}

function openDevice(
  server: ServerPeer,
  base: string,
  clock: Clock,
  mode: 'live' | 'periodic' = 'periodic',
  id = 'D1',
): Promise<DevicePeer> {
  return createDevice({
    id,
    dataDir: join(base, `device-${id}`),
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
      // Its clock set right (and two hours on) while the offset it keeps
      // is stale: it still judges its neighbours' stamps from its own
      // clock, not from three days back.
      offset.ms = 2 * 60 * 60_000
      expect(device.replica.stampTime.horizon()).toBeGreaterThanOrEqual(
        Date.now() + offset.ms - 1_000,
      )
      offset.ms = 3 * DAY
      await device.sync.delta()
      await eventually(() => expect(server.users.get('u2')?.phone).toBe('555'))
      expect(device.sync.status().deviceToServer.state).toBe('success')
    } finally {
      await device.close()
      await server.close()
    }
  }, 60_000)

  it('joins in the server time with a clock that reads fractions of a millisecond (an injected one), after a restart too', async () => {
    // A probe: the offset from the server's time was not a whole number of
    // milliseconds and was never taken, so every join was refused for good.
    const { server, base } = await site()
    const offset = { ms: 61 * 60_000 + 0.375 }
    let device = await openDevice(server, base, offsetClock(offset))
    try {
      await device.sync.full()
      expect(device.sync.status().serverToDevice.state).toBe('success')
      await device.close()
      offset.ms = 3 * DAY + 0.625
      device = await openDevice(server, base, offsetClock(offset))
      await server.users.put({ id: 'u4', name: 'Dee' })
      await device.sync.delta()
      expect(device.users.get('u4')?.name).toBe('Dee')
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
      await device.users.patch('u1', { pin: '4321' })
      const localPin = (): number =>
        device.replica.localOf(asUserId('u1')).fields?.s.pin ?? Number.NaN
      expect(stampMs(localPin())).toBeGreaterThan(Date.now() + 2 * DAY)
      expect(Math.min(...ownStampsMs(device, 'u3'))).toBeGreaterThan(Date.now() + 2 * DAY)
      await device.sync.delta()
      await eventually(() => expect(server.users.get('u3')?.name).toBe('Cid'))
      expect(server.users.get('u1')?.email).toBe('ann@example.com')
      expectWithinServerBound(device, ['u1', 'u3'])
      const rewritten = device.events.query({ type: 'stamps-rewritten' })
      expect(rewritten).toHaveLength(1)
      // u1's email and device-specific pin, and u3's every field (a put
      // writes them all); u2's delete mark holds the server's stamp it
      // hides, not one of the device's.
      expect(stampMs(localPin())).toBeLessThan(Date.now() + limits.stampSkewMsMax)
      expect(device.users.get('u1')?.pin).toBeDefined()
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
      // Reopened (its clock still ahead), it stamps in the server's time.
      await device.close()
      device = await openDevice(server, base, offsetClock(offset))
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
    let device = await openDevice(server, base, offsetClock(offset))
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
      // Reopened, it judges others' stamps from its time again, not from
      // the future it stamped in before (the rewound wall is stored).
      await device.close()
      device = await openDevice(server, base, offsetClock(offset))
      expect(device.replica.stampTime.horizon()).toBeLessThan(Date.now() + 60_000)
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
        dataDir: join(base, 'device-D1'),
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

describe("a neighbour's stamps within the skew, ahead of this device's clock", () => {
  it('are not written under: a write made after seeing one stays later than it', async () => {
    const { server, base } = await site()
    const fast = { ms: 58 * 60_000 }
    const right = { ms: 0 }
    const d2 = await openDevice(server, base, offsetClock(fast), 'periodic', 'D2')
    const d1 = await openDevice(server, base, offsetClock(right), 'periodic', 'D1')
    try {
      // The server holds the field: D2's value is not adopted (rule 1), so
      // no server stamp moves past D2's with it.
      await server.users.patch('u1', { title: 'Boss' })
      await d2.sync.full()
      await d2.users.patch('u1', { title: 'Diver' })
      await d2.sync.delta()
      await d1.sync.full()
      const theirs = asDeviceEntry(d1.replica.doc.getMap(usersRootName(asWriterId('D2'))).get('u1'))
      const seen = theirs?.s.title ?? Number.NaN
      expect(stampMs(seen)).toBeGreaterThan(Date.now() + 55 * 60_000)
      await d1.users.patch('u1', { title: 'Medic' })
      await d1.sync.delta()
      const mine = asDeviceEntry(d1.replica.doc.getMap(usersRootName(asWriterId('D1'))).get('u1'))
      expect(mine?.s.title).toBeGreaterThan(seen)
      expect(d1.events.query({ type: 'stamps-rewritten' })).toEqual([])
    } finally {
      await d1.close()
      await d2.close()
      await server.close()
    }
  }, 60_000)
})

describe('a CLOCK_SKEW close that names a time (unsigned: anyone on the path can send one)', () => {
  it('moves only join proofs, and only past the hour; stamps follow only a join the server took', async () => {
    const ats: number[] = []
    const start = Date.now()
    // First a time 50 minutes on (within the hour: a forgery the server
    // would take), then one 3 days on (past it: the server refuses a
    // proof in it unless it is true).
    const claims = [start + 50 * 60_000, start + 3 * DAY]
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 })
    wss.on('connection', (socket, req) => {
      ats.push(Number(new URL(req.url ?? '/', 'http://127.0.0.1').searchParams.get('at')))
      const claim = claims[Math.min(ats.length, claims.length) - 1] ?? start
      socket.close(1008, `CLOCK_SKEW: proof 50 min off; server time ${claim}`)
    })
    await once(wss, 'listening')
    const port = (wss.address() as AddressInfo).port
    const device = await createDevice({
      id: 'D1',
      dataDir: join(dir, `forged-${++serial}`),
      server: `ws://127.0.0.1:${port}`,
      siteKey: SITE_KEY,
      mode: 'periodic',
    })
    try {
      await eventually(() => expect(ats.length).toBeGreaterThanOrEqual(3), 30_000)
      const [first, second, third] = ats as [number, number, number]
      expect(Math.abs(first - start)).toBeLessThan(60_000)
      // The time within the hour is not taken: the next proof is in its own.
      expect(Math.abs(second - Date.now())).toBeLessThan(60_000)
      // The one past it is, for the next proof only.
      expect(third).toBeGreaterThan(start + 3 * DAY - 60_000)
      expect(device.replica.stampTime.offset).toBe(0)
    } finally {
      await device.close()
      wss.close()
    }
  }, 60_000)
})

describe('a device whose clock is set right after it rejoined at once in the time a refusal named', () => {
  it('takes the time of each later refusal for its next attempt (it kept the offset of before for good)', async () => {
    const ats: number[] = []
    // Every join refused, naming the true time: the server is down for it.
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 })
    wss.on('connection', (socket, req) => {
      ats.push(Number(new URL(req.url ?? '/', 'http://127.0.0.1').searchParams.get('at')))
      socket.close(1008, `CLOCK_SKEW: proof off; server time ${Date.now()}`)
    })
    await once(wss, 'listening')
    const port = (wss.address() as AddressInfo).port
    const offset = { ms: 3 * DAY }
    const device = await createDevice({
      id: 'D1',
      dataDir: join(dir, `stepped-${++serial}`),
      server: `ws://127.0.0.1:${port}`,
      siteKey: SITE_KEY,
      clock: offsetClock(offset),
      mode: 'periodic',
    })
    try {
      // Its own time, then at once the server's (3 days back).
      await eventually(() => expect(ats.length).toBeGreaterThanOrEqual(2), 30_000)
      expect(Math.abs((ats[1] as number) - Date.now())).toBeLessThan(60_000)
      // Its clock set right (NTP): the offset it took is 3 days off now.
      offset.ms = 0
      const from = ats.length
      await eventually(() => expect(ats.length).toBeGreaterThanOrEqual(from + 2), 30_000)
      // One attempt in the stale offset, refused, then in the time it named.
      expect(Math.abs((ats.at(-1) as number) - Date.now())).toBeLessThan(60_000)
    } finally {
      await device.close()
      wss.close()
    }
  }, 60_000)
})

describe('a device whose clock is just an hour behind the server', () => {
  it('takes the time a CLOCK_SKEW names at the edge of the hour, and joins at once in it', async () => {
    const ats: number[] = []
    const start = Date.now()
    // The server refused a proof just past the hour; its time, a moment
    // later, is just within the hour of the device's clock.
    const claim = start + 60 * 60_000 - 2_000
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 })
    wss.on('connection', (socket, req) => {
      ats.push(Number(new URL(req.url ?? '/', 'http://127.0.0.1').searchParams.get('at')))
      socket.close(1008, `CLOCK_SKEW: proof -60 min off; server time ${claim}`)
    })
    await once(wss, 'listening')
    const port = (wss.address() as AddressInfo).port
    const device = await createDevice({
      id: 'D1',
      dataDir: join(dir, `edge-${++serial}`),
      server: `ws://127.0.0.1:${port}`,
      siteKey: SITE_KEY,
      mode: 'periodic',
    })
    try {
      await eventually(() => expect(ats.length).toBeGreaterThanOrEqual(2), 10_000)
      expect(ats[1]).toBeGreaterThan(start + 59 * 60_000)
    } finally {
      await device.close()
      wss.close()
    }
  }, 30_000)
})

describe('a forged CLOCK_SKEW time the server would take (within the hour)', () => {
  it('moves the join proof only: the device never stamps in it, nor keeps it', async () => {
    const { server, base } = await site()
    const real = new URL(server.url)
    let connections = 0
    // A relay on the path: the first join is closed with a forged time 58
    // minutes on (within the hour, so a proof in it gets in), the rest go
    // through to the server.
    const relay = new WebSocketServer({ host: '127.0.0.1', port: 0 })
    relay.on('connection', (socket, req) => {
      if (++connections === 1) {
        socket.close(1008, `CLOCK_SKEW: proof 58 min off; server time ${Date.now() + 58 * 60_000}`)
        return
      }
      const up = new WebSocket(`ws://${real.host}${req.url ?? '/'}`)
      const pending: Array<[WebSocket.RawData, boolean]> = []
      up.on('open', () => {
        for (const [data, binary] of pending.splice(0)) up.send(data, { binary })
      })
      socket.on('message', (data, binary) =>
        up.readyState === WebSocket.OPEN ? up.send(data, { binary }) : pending.push([data, binary]),
      )
      up.on('message', (data, binary) => socket.send(data, { binary }))
      up.on('close', (code, reason) =>
        socket.close(code === 1005 || code === 1006 ? 1000 : code, reason),
      )
      up.on('error', () => socket.terminate())
      socket.on('close', () => up.close())
    })
    await once(relay, 'listening')
    const url = `ws://127.0.0.1:${(relay.address() as AddressInfo).port}`
    const device = await createDevice({
      id: 'D1',
      dataDir: join(base, 'device-relayed'),
      server: url,
      siteKey: SITE_KEY,
      mode: 'periodic',
    })
    try {
      await device.sync.full()
      expect(connections).toBeGreaterThanOrEqual(2)
      expect(device.replica.stampTime.offset).toBe(0)
      await device.users.patch('u1', { email: 'ann@example.com' })
      await device.sync.delta()
      expect(Math.max(...ownStampsMs(device, 'u1'))).toBeLessThan(Date.now() + 60_000)
      await eventually(() => expect(server.users.get('u1')?.email).toBe('ann@example.com'))
    } finally {
      await device.close()
      relay.close()
      await server.close()
    }
  }, 60_000)
})
