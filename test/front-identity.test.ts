/**
 * Who may come through the front door (issue 11): ids compared exactly as
 * stored, `server` reserved in any case, an id differing from a registered
 * one only by case refused, device names and serials cleaned and bounded,
 * a bounded registry, one connection per device id (the newer replaces the
 * older), and approval mode. In-memory transport and a manual clock.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join as joinPath } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import type { Clock } from '../core/clock.js'
import { hasCode } from '../core/errors.js'
import { cleanLabel } from '../core/ids.js'
import { limits } from '../core/limits.js'
import { keyPairFromSeed, signJoinProof } from '../core/signing.js'
import { CloseCode, isFinalClose } from '../core/protocol.js'
import type { CloseInfo, Connection } from '../core/transport.js'
import { createDevice, type DevicePeer } from '../peers/create-device.js'
import { createServer, type ServerPeer } from '../server-peer/create-server.js'
import { DeviceRegistry } from '../server-peer/device-registry.js'
import { memoryStore, openLevelStore } from '../storage/level-store.js'
import { memoryPair } from '../transports/memory-transport.js'
import { eventually } from './helpers/eventually.js'
import { ManualClock, settle } from './helpers/manual-clock.js'
import { skewedClock } from './helpers/skewed-clock.js'
import { withLimits } from './helpers/limits.js'

const SITE_KEY = 'identity-site-key'
const closers: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close().catch(() => undefined)
})

async function newServer(
  clock: ManualClock,
  extra: { approveDevices?: boolean } = {},
): Promise<ServerPeer> {
  const peer = await createServer({
    store: memoryStore(),
    clock,
    listen: false,
    siteKey: SITE_KEY,
    ...extra,
  })
  closers.push(() => peer.close())
  return peer
}

/** Joins `server` over an in-memory pair; `closed` is set when the server closes it. */
function join(
  server: ServerPeer,
  params: Record<string, string>,
): { mine: Connection; closed: () => CloseInfo | undefined } {
  const [mine, theirs] = memoryPair('device', 'server')
  let info: CloseInfo | undefined
  mine.onClose((i) => (info = i))
  const query = new URLSearchParams({ key: SITE_KEY, ...params })
  server.accept(theirs, `/roster?${query.toString()}`)
  return { mine, closed: () => info }
}

async function closeOf(
  server: ServerPeer,
  params: Record<string, string>,
): Promise<CloseInfo | undefined> {
  const { closed } = join(server, params)
  await settle()
  return closed()
}

async function newDevice(
  clock: Clock,
  id: string,
  server: () => ServerPeer,
  store: Parameters<typeof createDevice>[0]['store'] = memoryStore(),
): Promise<DevicePeer> {
  let n = 0
  const device = await createDevice({
    id,
    store,
    clock,
    server: 'ws://in-memory',
    serverTransport: {
      connect: async (url) => {
        const [mine, theirs] = memoryPair('device', 'server')
        server().accept(theirs, url)
        return mine
      },
      close: async () => undefined,
    },
    siteKey: SITE_KEY,
    randomUint32: () => 0x2000 + n++,
  })
  closers.push(() => device.close())
  return device
}

describe('identity: ids', () => {
  it('reserves `server` in any case', async () => {
    const server = await newServer(new ManualClock())
    for (const id of ['server', 'SERVER', 'Server', 'sErVeR']) {
      const info = await closeOf(server, { device: id })
      expect(info?.code, id).toBe(CloseCode.idConflict)
      expect(info?.reason, id).toMatch(/^ID_CONFLICT: /)
    }
    expect(server.devices.list()).toEqual([])
  })

  it('refuses an id that differs from a registered one only by case: a revoked T-1 stays out as t-1', async () => {
    const server = await newServer(new ManualClock())
    const first = join(server, { device: 'T-1' })
    await settle()
    expect(first.closed()).toBeUndefined()
    const again = await closeOf(server, { device: 't-1' })
    expect(again?.code).toBe(CloseCode.idConflict)
    await server.devices.revoke('T-1')
    expect((await closeOf(server, { device: 't-1' }))?.code).toBe(CloseCode.idConflict)
    expect((await closeOf(server, { device: 'T-1' }))?.code).toBe(CloseCode.revoked)
    // Compared exactly as stored: the other case is not the device.
    expect(await server.devices.revoke('t-1')).toBe(false)
    expect(server.devices.list().map((d) => d.id)).toEqual(['T-1'])
  })

  it('cleans names and serials of control characters and escapes, and bounds them', async () => {
    const server = await newServer(new ManualClock())
    join(server, {
      device: 'D1',
      name: `lobby\u0000\n\u001b[31mred\u001b[0m\u202e${'x'.repeat(1_500)}`,
      serial: `SN\r\n1\u0007${'9'.repeat(1_500)}`,
    })
    await settle()
    const [record] = server.devices.list()
    expect(record?.name.startsWith('lobbyred')).toBe(true)
    expect(record?.name.length).toBe(limits.deviceNameCharsMax)
    expect(record?.serial.startsWith('SN19')).toBe(true)
    expect(record?.serial.length).toBe(limits.deviceSerialCharsMax)
    // eslint-disable-next-line no-control-regex
    expect(/[\u0000-\u001f\u007f\u202e]/.test(`${record?.name}${record?.serial}`)).toBe(false)
    // 10,000 characters never reach the registry: the join URL is bounded,
    // and the label is cut whatever path it came by.
    expect(cleanLabel(`\u001b[2J${'y'.repeat(10_000)}`, limits.deviceNameCharsMax)).toBe(
      'y'.repeat(limits.deviceNameCharsMax),
    )
    const long = await closeOf(server, { device: 'D2', name: 'z'.repeat(10_000) })
    expect(long?.code).toBe(CloseCode.malformedRequest)
  })
})

describe('identity: a bounded registry', () => {
  it('refuses a new device past devicesRegisteredMax, and a new pending one past devicesPendingMax', async () => {
    const clock = new ManualClock()
    const server = await newServer(clock)
    const registry = new DeviceRegistry(clock, server.replica)
    const join = { name: 'n', address: 'a', serial: 's' }
    for (let i = 0; i < limits.devicesPendingMax; i++) {
      expect(registry.admission(`P-${i}`, join, true)?.code).toBe('PEER_PENDING')
    }
    expect(registry.admission('P-over', join, true)?.code).toBe('REGISTRY_FULL')
    for (let i = limits.devicesPendingMax; i < limits.devicesRegisteredMax; i++) {
      expect(registry.admission(`D-${i}`, join, false)).toBeUndefined()
      registry.seen(`D-${i}`, 'n', 'a')
    }
    expect(registry.list()).toHaveLength(limits.devicesRegisteredMax)
    expect(registry.admission('D-over', join, false)?.code).toBe('REGISTRY_FULL')
    // Known devices still come in.
    expect(registry.admission(`D-${limits.devicesPendingMax}`, join, false)).toBeUndefined()
    await registry.close()
  })
})

describe('identity: a full registry is not a lockout (issue 11: 10,000 made-up ids in 7 s)', () => {
  const join1 = { name: 'n', address: 'a', serial: 's' }

  it('counts a device as having written once the server takes an item of its own, not for a sync that brings nothing', async () => {
    const clock = new ManualClock()
    const server = await newServer(clock)
    await server.users.put({ id: 'u1', name: 'Ann' })
    const writer = await newDevice(clock, 'writer', () => server)
    const idle = await newDevice(clock, 'idle', () => server)
    await writer.sync.full()
    await idle.sync.full()
    const wrote = (id: string): boolean | undefined =>
      server.devices.list().find((d) => d.id === id)?.wrote
    // Both synced; neither wrote.
    expect(server.devices.list().find((d) => d.id === 'idle')?.sync.deviceToServer.state).toBe(
      'success',
    )
    expect([wrote('writer'), wrote('idle')]).toEqual([false, false])
    await writer.users.patch('u1', { email: 'ann@example.com' })
    await writer.sync.whenIdle()
    expect(server.users.get('u1')?.email).toBe('ann@example.com')
    expect([wrote('writer'), wrote('idle')]).toEqual([true, false])
  })

  it('makes room by forgetting the device away longest that never wrote anything, once away an hour; never one that did, a connected or a revoked one', async () => {
    const clock = new ManualClock()
    const server = await newServer(clock)
    const registry = new DeviceRegistry(clock, server.replica)
    // One device that synced, one that stays connected, then made-up ids
    // that joined and left, up to the limit.
    registry.admission('synced', join1, false)
    registry.seen('synced', 'n', 'a')
    registry.direction('synced', 'deviceToServer', 'success')
    registry.wrote('synced')
    registry.left('synced')
    registry.admission('online', join1, false)
    registry.seen('online', 'n', 'a')
    await clock.advance(1_000)
    for (let i = 2; i < limits.devicesRegisteredMax; i++) {
      registry.admission(`junk-${i}`, join1, false)
      registry.seen(`junk-${i}`, 'n', 'a')
      // Answered once (a step 1 costs nothing), and an update that brought
      // nothing taken (a probe: that made it unforgettable): it wrote nothing.
      registry.direction(`junk-${i}`, 'serverToDevice', 'success')
      registry.direction(`junk-${i}`, 'deviceToServer', 'success')
      registry.left(`junk-${i}`)
      if (i === 2) await clock.advance(1_000) // junk-2 is the oldest
    }
    expect(registry.list()).toHaveLength(limits.devicesRegisteredMax)
    // Away less than an hour: full.
    expect(registry.admission('new-1', join1, false)?.code).toBe('REGISTRY_FULL')
    await clock.advance(limits.deviceUnsyncedForgetMs)
    expect(registry.admission('new-1', join1, false)).toBeUndefined()
    registry.seen('new-1', 'n', 'a')
    const ids = new Set(registry.list().map((d) => d.id))
    expect(ids.has('junk-2')).toBe(false)
    expect([...['synced', 'online', 'junk-3', 'new-1']].every((id) => ids.has(id))).toBe(true)
    expect(registry.list()).toHaveLength(limits.devicesRegisteredMax)
    await server.replica.drain()
    expect(server.replica.events.query({ type: 'device-forgotten' })).toMatchObject([
      { deviceId: 'junk-2', message: expect.stringMatching(/never wrote anything/) as unknown },
    ])
    // Revoked records do not count (and stay, refused).
    await registry.revoke('junk-3')
    expect(registry.admission('new-2', join1, false)).toBeUndefined()
    expect(registry.admission('junk-3', join1, false)?.code).toBe('PEER_REVOKED')
    await registry.close()
  })

  it('server.devices.forget removes a record (HTTP DELETE too); joining again it is new; a revoked one is kept', async () => {
    const server = await createServer({ store: memoryStore(), siteKey: SITE_KEY })
    closers.push(() => server.close())
    join(server, { device: 'T1' })
    join(server, { device: 'T2' })
    join(server, { device: 'T3' })
    await settle()
    expect(server.devices.list().map((d) => d.id)).toEqual(['T1', 'T2', 'T3'])
    expect(await server.devices.forget('T1')).toBe(true)
    expect(await server.devices.forget('nobody')).toBe(false)
    const res = await fetch(`${server.http}/api/devices/T2`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${server.adminToken}` },
    })
    expect(res.status).toBe(200)
    expect(
      (
        await fetch(`${server.http}/api/devices/T2`, {
          method: 'DELETE',
          headers: { authorization: `Bearer ${server.adminToken}` },
        })
      ).status,
    ).toBe(404)
    await server.devices.revoke('T3')
    await expect(server.devices.forget('T3')).rejects.toMatchObject({ code: 'PEER_REVOKED' })
    expect(server.devices.list().map((d) => d.id)).toEqual(['T3'])
    expect(server.events.query({ type: 'device-forgotten' }).map((e) => e.deviceId)).toEqual([
      'T1',
      'T2',
    ])
    // Joining again, T1 is a new device.
    join(server, { device: 'T1' })
    await settle()
    expect(server.devices.list().map((d) => d.id)).toEqual(['T1', 'T3'])
  })
})

describe('identity: one connection per device id', () => {
  it('a newer connection replaces the older, which is closed with SESSION_REPLACED', async () => {
    const server = await newServer(new ManualClock())
    const older = join(server, { device: 'D1' })
    await settle()
    const newer = join(server, { device: 'D1' })
    await settle()
    expect(older.closed()).toEqual({
      code: CloseCode.replaced,
      reason: expect.stringMatching(/^SESSION_REPLACED: /) as unknown,
      byPeer: true,
    })
    expect(newer.closed()).toBeUndefined()
    expect(server.devices.list()).toMatchObject([{ id: 'D1', state: 'connected' }])
    // A device told it was replaced does not reconnect on its own (no flapping).
    expect(isFinalClose(CloseCode.replaced)).toBe(true)
    newer.mine.close()
    await settle()
    expect(server.devices.list()).toMatchObject([{ id: 'D1', state: 'disconnected' }])
  })
})

describe('identity: reopening', () => {
  it('a device reopened with its clock held still joins at once, past the proof the server accepted (black-box probe)', async () => {
    // Its proof named the clock's time again: refused as replayed, and with
    // the clock held still its backoff never ran out.
    const clock = new ManualClock()
    const server = await newServer(clock)
    const dir = await mkdtemp(joinPath(tmpdir(), 'rostersync-reopen-'))
    closers.push(() => rm(dir, { recursive: true, force: true }))
    for (let round = 0; round < 3; round++) {
      const store = await openLevelStore(dir)
      const device = await newDevice(clock, 'T-7', () => server, store)
      // Without moving the clock (its backoff never runs out) and without
      // a sync by hand (which tries at once): the device's own first sync.
      await eventually(() =>
        expect(device.sync.status(), `round ${round}`).toMatchObject({
          link: 'connected',
          serverToDevice: { state: 'success' },
          deviceToServer: { state: 'success' },
        }),
      )
      await device.close()
    }
  })
})

describe('identity: approval mode', () => {
  it('holds a new device as pending until approved; the device retries with backoff and gets in', async () => {
    const clock = new ManualClock()
    const server = await newServer(clock, { approveDevices: true })
    const device = await newDevice(clock, 'T-9', () => server)
    await settle()
    expect(server.devices.list()).toMatchObject([{ id: 'T-9', state: 'pending', pending: true }])
    expect(server.events.query({ type: 'device-registered', deviceId: 'T-9' })).toHaveLength(1)
    expect(device.serverLink?.state).not.toBe('refused')
    // Its status says why it waits (it said SYNC_FAILED, its waiting line PEER_PENDING).
    expect(device.sync.status().serverToDevice).toMatchObject({
      state: 'failed',
      error: { code: 'PEER_PENDING' },
    })
    expect(await server.devices.approve('T-9')).toBe(true)
    // Logged once (approving again changes nothing).
    expect(await server.devices.approve('T-9')).toBe(true)
    expect(server.events.query({ type: 'device-approved', deviceId: 'T-9' })).toHaveLength(1)
    await clock.advance(60_000)
    await device.sync.whenIdle()
    expect(server.devices.list()).toMatchObject([{ id: 'T-9', state: 'connected', pending: false }])
  })

  it('keeps a revoked device out, under its id or a new one', async () => {
    const server = await newServer(new ManualClock(), { approveDevices: true })
    expect((await closeOf(server, { device: 'T-1' }))?.code).toBe(CloseCode.pending)
    expect(await server.devices.approve('T-1')).toBe(true)
    const admitted = join(server, { device: 'T-1' })
    await settle()
    expect(admitted.closed()).toBeUndefined()
    await server.devices.revoke('T-1')
    await settle()
    expect(admitted.closed()?.code).toBe(CloseCode.revoked)
    expect((await closeOf(server, { device: 'T-1' }))?.code).toBe(CloseCode.revoked)
    // With the site key and a new id it is only a pending stranger.
    const info = await closeOf(server, { device: 'T-1-new' })
    expect(info).toEqual({
      code: CloseCode.pending,
      reason: expect.stringMatching(/^PEER_PENDING: /) as unknown,
      byPeer: true,
    })
    // Approving a revoked device does not bring it back.
    await expect(server.devices.approve('T-1')).rejects.toSatisfy((e) => hasCode(e, 'PEER_REVOKED'))
    expect(await server.devices.approve('nobody')).toBe(false)
  })

  it("registers no new id for a revoked device's key: nothing waits keyless for an approval that would bind the next key (probe)", async () => {
    const clock = new ManualClock()
    const server = await newServer(clock, { approveDevices: true })
    const key = keyPairFromSeed(new Uint8Array(32).fill(9))
    const joinAs = (device: string, at: number): Record<string, string> => ({
      device,
      pub: Buffer.from(key.publicKey).toString('base64url'),
      at: String(at),
      proof: Buffer.from(signJoinProof(key, 'roster', device, at)).toString('base64url'),
    })
    expect((await closeOf(server, joinAs('T-K', clock.now())))?.code).toBe(CloseCode.pending)
    expect(await server.devices.approve('T-K')).toBe(true)
    expect(await server.devices.revoke('T-K')).toBe(true)
    const info = await closeOf(server, joinAs('T-K-new', clock.now() + 1))
    expect(info?.reason).toMatch(/^PEER_REVOKED: this key was revoked/)
    // Not registered: not listed, nothing to approve, no event.
    expect(server.devices.list().map((d) => d.id)).toEqual(['T-K'])
    expect(await server.devices.approve('T-K-new')).toBe(false)
    expect(server.events.query({ type: 'device-registered', deviceId: 'T-K-new' })).toEqual([])
  })

  it('a pending device whose clock is days off learns the server time first, so its key is bound while it waits', async () => {
    const clock = new ManualClock()
    const server = await newServer(clock, { approveDevices: true })
    const device = await newDevice(skewedClock(clock, -10 * 86_400_000), 'T-8', () => server)
    await settle(20)
    const [row] = server.devices.list()
    expect(row).toMatchObject({ id: 'T-8', state: 'pending' })
    expect(row?.keyFingerprint).toBe(device.keyFingerprint)
  })

  it('joins without a proof do not push a device waiting for approval out of a full list (hostile probe)', async () => {
    // With the site key alone, 1,000 made-up ids filled the pending list,
    // and each past it forgot a real pending device (its bound key too).
    withLimits(limits, { devicesPendingMax: 3 })
    const clock = new ManualClock()
    const server = await newServer(clock, { approveDevices: true })
    const victim = await newDevice(clock, 'victim', () => server)
    await settle()
    await victim.close()
    await clock.advance(limits.deviceUnsyncedForgetMs + 60_000)
    for (const id of ['junk-1', 'junk-2'])
      expect((await closeOf(server, { device: id }))?.code).toBe(CloseCode.pending)
    // The list is full: no proof, no room.
    const noProof = await closeOf(server, { device: 'junk-3' })
    expect(noProof?.reason).toMatch(/^REGISTRY_FULL/)
    const key = keyPairFromSeed(new Uint8Array(32).fill(7))
    const at = clock.now()
    const made = {
      pub: Buffer.from(key.publicKey).toString('base64url'),
      at: String(at),
      proof: Buffer.from(signJoinProof(key, 'roster', 'junk-4', at)).toString('base64url'),
    }
    // A made-up proof neither.
    const badProof = await closeOf(server, { device: 'junk-5', ...made })
    expect(badProof?.reason).toMatch(/^REGISTRY_FULL/)
    expect(server.devices.list().map((d) => d.id)).toContain('victim')
    expect(server.events.query({ type: 'device-forgotten' })).toHaveLength(0)
    // A join whose proof holds still makes room, as before.
    expect((await closeOf(server, { device: 'junk-4', ...made }))?.code).toBe(CloseCode.pending)
    expect(server.devices.list().map((d) => d.id)).not.toContain('victim')
  })

  it('without approval mode, a new device with the site key joins at once', async () => {
    const server = await newServer(new ManualClock())
    expect(await closeOf(server, { device: 'T-2' })).toBeUndefined()
    expect(server.devices.list()).toMatchObject([{ id: 'T-2', pending: false }])
  })
})
