/**
 * What crosses the public API is a copy (core/detach.ts), and its arguments
 * are checked. Found by a black-box probe: pushing into the `cards` of a
 * view from `users.get` changed the document in memory; the next patch of
 * another field stored and replicated the change, unvalidated, and a full
 * sync gave it to every device. Rows of `devices.list`, events and the
 * sync status were the peers' own objects too, and bytes given to
 * `users.put` stayed the caller's.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { createDevice } from '../peers/create-device.js'
import { ManualClock, settle } from './helpers/manual-clock.js'
import { memorySite, type MemorySite } from './helpers/memory-site.js'

let site: MemorySite | undefined
afterEach(async () => {
  await site?.close()
  site = undefined
})

const CARDS = [{ type: 'csn', value: '04A1' }]
/** Reopened without a server: the status is what the device read back, not a new sync's. */
const OFFLINE = { server: undefined } as unknown as Parameters<MemorySite['device']>[2]

async function started() {
  const clock = new ManualClock()
  site = await memorySite(clock)
  await site.server.users.put({
    id: 'u1',
    name: 'Ann',
    groups: ['g1'],
    cards: CARDS,
    photo: new Uint8Array([1, 2, 3]),
  })
  const device = await site.device('D1', clock)
  await device.sync.whenReady()
  return { server: site.server, device, clock }
}

/** Changes every array, byte and object of a value in place. */
function scribble(value: unknown): void {
  if (value instanceof Uint8Array) value.fill(0xee)
  else if (Array.isArray(value)) {
    for (const item of value) scribble(item)
    value.push({ type: 'bogus', value: 7 })
  } else if (typeof value === 'object' && value !== null) {
    const o = value as Record<string, unknown>
    for (const key of Object.keys(o)) scribble(o[key])
    o.injected = 'x'
  }
}

describe('the public API hands out copies', () => {
  it('a changed view changes no peer: not the next get, not a later write, not a full sync', async () => {
    const { server, device } = await started()
    for (const peer of [server, device]) {
      scribble(peer.users.get('u1'))
      for (const view of peer.users.list()) scribble(view)
    }
    await server.users.patch('u1', { title: 'Engineer' })
    await device.users.patch('u1', { email: 'ann@example.com' })
    await device.sync.whenIdle()
    await device.sync.full()
    const expected = {
      id: 'u1',
      name: 'Ann',
      title: 'Engineer',
      email: 'ann@example.com',
      groups: ['g1'],
      cards: CARDS,
      photo: new Uint8Array([1, 2, 3]),
    }
    expect(server.users.get('u1')).toEqual(expected)
    expect(device.users.get('u1')).toEqual(expected)
    const late = await site!.device('D2', new ManualClock())
    await late.sync.whenReady()
    expect(late.users.get('u1')).toEqual(expected)
  })

  it('keeps its own copy of the bytes a write was given', async () => {
    const { server, device } = await started()
    const photo = new Uint8Array([7, 8, 9])
    await server.users.patch('u1', { photo, faces: [photo] })
    photo.fill(0)
    expect(server.users.get('u1')).toMatchObject({
      photo: new Uint8Array([7, 8, 9]),
      faces: [new Uint8Array([7, 8, 9])],
    })
    await device.sync.delta()
    expect(device.users.get('u1')?.photo).toEqual(new Uint8Array([7, 8, 9]))
  })

  it('hands out copies of events, device rows and the sync status', async () => {
    const { server, device } = await started()
    for (const peer of [server, device]) {
      const before = peer.events.query()
      for (const event of peer.events.query()) scribble(Object.assign(event, { deviceId: 'FAKE' }))
      expect(peer.events.query()).toEqual(before)
      expect(peer.events.query({ deviceId: 'FAKE' })).toEqual([])
    }
    await server.devices.revoke('D1')
    const rows = server.devices.list()
    for (const row of rows) Object.assign(row, { revoked: false, state: 'success', name: 'x' })
    expect(server.devices.list().find((d) => d.id === 'D1')).toMatchObject({ revoked: true })
    const status = device.sync.status()
    const before = structuredClone(status)
    Object.assign(status.serverToDevice, { state: 'failed' })
    expect(device.sync.status().serverToDevice).toEqual(before.serverToDevice)
  })
})

describe('the public API checks its arguments', () => {
  it('refuses a bad event query with INVALID_OPTIONS, and takes Date bounds', async () => {
    const { server, device } = await started()
    for (const peer of [server, device]) {
      for (const bad of [
        null,
        5,
        { type: 'no-such-type' },
        { since: '2026-01-01T00:00:00Z' },
        { since: Number.NaN },
        { until: Infinity },
        { userID: 'u1' },
      ])
        expect(() => peer.events.query(bad as never), JSON.stringify(bad)).toThrow(
          expect.objectContaining({ code: 'INVALID_OPTIONS' }),
        )
      const all = peer.events.query()
      expect(all.length).toBeGreaterThan(0)
      const first = all[0]!.at
      expect(peer.events.query({ since: new Date(first) as never })).toEqual(
        peer.events.query({ since: first }),
      )
      expect(peer.events.query({ until: new Date(first) as never })).toEqual([])
    }
  })

  it('refuses a bad devices.list filter with INVALID_OPTIONS', async () => {
    const { server } = await started()
    for (const bad of [{ nameContains: 5 }, { name: 'D' }, 'D1', null])
      expect(() => server.devices.list(bad as never), JSON.stringify(bad)).toThrow(
        expect.objectContaining({ code: 'INVALID_OPTIONS' }),
      )
    expect(server.devices.list({ nameContains: 'd1' }).map((d) => d.id)).toEqual(['D1'])
    expect(server.devices.list({}).map((d) => d.id)).toEqual(['D1'])
  })
})

describe('a device the server refuses says why, with the refusal code', () => {
  it('PEER_REVOKED in the rejections, the status and the log once revoked', async () => {
    const { server, device, clock } = await started()
    await server.devices.revoke('D1')
    await settle()
    for (const call of [() => device.sync.full(), () => device.sync.delta()])
      await expect(call()).rejects.toMatchObject({ code: 'PEER_REVOKED' })
    for (const direction of ['serverToDevice', 'deviceToServer'] as const)
      expect(device.sync.status()[direction]).toMatchObject({
        state: 'failed',
        error: { code: 'PEER_REVOKED' },
      })
    await clock.advance(3_600_000)
    await settle()
    expect(device.events.query({ type: 'sync-failed' })).toMatchObject([{ code: 'PEER_REVOKED' }])
    // Restarted, it knocks again: the server's log says so too, once
    // however often it comes back (README: `events --device … --type sync-failed`).
    await device.close()
    for (let i = 0; i < 2; i++) {
      const again = await site!.device('D1', clock)
      await expect(again.sync.delta()).rejects.toMatchObject({ code: 'PEER_REVOKED' })
      await again.close()
    }
    expect(server.events.query({ type: 'sync-failed', deviceId: 'D1' })).toMatchObject([
      { code: 'PEER_REVOKED' },
    ])
  })

  it('knocks that prove nothing (a wrong key, a made-up room) leave the log and the registry alone', async () => {
    const { server, device } = await started()
    const before = server.devices.list()[0]?.sync
    for (let i = 0; i < 20; i++) {
      const url =
        i % 2 === 0
          ? 'ws://memory-site/roster?device=D1&key=wrong'
          : 'ws://memory-site/nope?device=D1'
      const conn = await site!.transport.connect(url)
      conn.close(1000, 'done')
    }
    await settle()
    expect(server.events.query({ type: 'sync-failed' })).toEqual([])
    expect(server.devices.list()[0]?.sync).toEqual(before)
    expect(device.sync.status().deviceToServer.state).toBe('success')
  })

  it('AUTH_FAILED for a wrong site key, from the first start on', async () => {
    const clock = new ManualClock()
    site = await memorySite(clock)
    const device = await site.device('D9', clock, { siteKey: 'not-the-site-key' })
    await settle()
    await expect(device.sync.whenReady()).rejects.toMatchObject({ code: 'AUTH_FAILED' })
    await expect(device.sync.full()).rejects.toMatchObject({ code: 'AUTH_FAILED' })
    expect(device.sync.status().deviceToServer).toMatchObject({
      state: 'failed',
      error: { code: 'AUTH_FAILED' },
    })
    expect(device.events.query({ type: 'sync-failed' })).toMatchObject([{ code: 'AUTH_FAILED' }])
  })
})

describe('a reopened device says how its last sync ended', () => {
  it('success, then failed with the refusal, read back from its log', async () => {
    const { server, device, clock } = await started()
    const synced = device.sync.status().serverToDevice
    await device.close()
    const again = await site!.device('D1', clock, OFFLINE)
    expect(again.sync.status()).toMatchObject({
      serverToDevice: { state: 'success', at: synced.at },
      deviceToServer: { state: 'success' },
    })
    await again.close()
    await server.devices.revoke('D1')
    const refused = await site!.device('D1', clock)
    await settle()
    await refused.close()
    const last = await site!.device('D1', clock, OFFLINE)
    expect(last.sync.status().deviceToServer).toMatchObject({
      state: 'failed',
      error: { code: 'PEER_REVOKED' },
    })
  })
})

describe('a device data directory belongs to one device id', () => {
  it('refuses to open it under another id (WRONG_DATA_DIR), and opens it again under its own', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'rostersync-boundary-'))
    try {
      const first = await createDevice({ id: 'A1', dataDir: dir })
      await first.close()
      for (const id of ['A9', 'a1'])
        await expect(createDevice({ id, dataDir: dir })).rejects.toThrow(
          /^.*holds device "A1"'s data, not device "(A9|a1)"'s/,
        )
      const again = await createDevice({ id: 'A1', dataDir: dir })
      await again.close()
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })

  it("refuses the server's id in any case (INVALID_OPTIONS) before it opens anything", async () => {
    for (const id of ['server', 'SERVER', 'Server'])
      await expect(createDevice({ id, dataDir: '/nonexistent/never-made' })).rejects.toMatchObject({
        code: 'INVALID_OPTIONS',
      })
  })
})
