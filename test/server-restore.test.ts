/**
 * A server restored from a backup of its data directory (PROTOCOL.md, "A
 * restored server"; README, backups): devices that synced after the backup
 * hold operations of the server's the restored server no longer has. The
 * server takes a fresh clientID at every start, so what it writes after
 * the restore never reuses ids those devices hold with other content (they
 * would never get it), and a device whose server lacks operations of its
 * own that it holds fetches the server's roster whole, its own entries
 * carried over it, so the rolled-back values go. Real server and devices
 * on LevelDB, the backup a copy of the stopped server's directory.
 */
import { cp, mkdtemp, rm } from 'node:fs/promises'
import { createServer as createNetServer, connect, type AddressInfo, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { asUserId } from '../core/ids.js'
import { createDevice, type DeviceOptions, type DevicePeer } from '../peers/create-device.js'
import { createServer, type ServerPeer } from '../server-peer/create-server.js'
import { eventually } from './helpers/eventually.js'
import { lostClocks } from '../peers/device-sync/lost-clocks.js'
import { netLimits } from '../core/limits.js'
import { withLimits } from './helpers/limits.js'

const closers: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close().catch(() => undefined)
})

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'rostersync-restore-'))
  closers.push(() => rm(dir, { recursive: true, force: true }))
  return dir
}

async function server(dataDir: string, port = 0): Promise<ServerPeer> {
  const peer = await createServer({ dataDir, port })
  closers.push(() => peer.close())
  return peer
}

/** A backup: the stopped server's directory copied to `backup`; the server started again. */
async function backUp(peer: ServerPeer, data: string, backup: string): Promise<ServerPeer> {
  const port = Number(new URL(peer.url).port)
  await peer.close()
  await cp(data, backup, { recursive: true })
  return server(data, port)
}

/** A restore: the server stopped, its directory replaced by `backup`'s copy, started again. */
async function restoreTo(peer: ServerPeer, data: string, backup: string): Promise<ServerPeer> {
  const port = Number(new URL(peer.url).port)
  await peer.close()
  await rm(data, { recursive: true, force: true })
  await cp(backup, data, { recursive: true })
  return server(data, port)
}

/** A device on LevelDB in `dir`; its clock `aheadMs` ahead of the machine's. */
async function device(id: string, dir: string, peer: ServerPeer, aheadMs = 0): Promise<DevicePeer> {
  const created = await createDevice({
    id,
    dataDir: join(dir, id),
    server: peer.url,
    ...(peer.siteKey === undefined ? {} : { siteKey: peer.siteKey }),
    ...(aheadMs === 0
      ? {}
      : {
          clock: {
            now: () => Date.now() + aheadMs,
            setTimeout: (fn: () => void, ms: number) => setTimeout(fn, ms),
            clearTimeout: (handle: unknown) => clearTimeout(handle as NodeJS.Timeout),
          },
        }),
  })
  closers.push(() => created.close())
  return created
}

/**
 * A device on LevelDB in `dir` with the LAN on (dialling `peers`),
 * reaching its server at `url` (the server's, or a proxy's in front of it).
 */
async function lanDevice(
  id: string,
  dir: string,
  url: string,
  siteKey: string | undefined,
  peers: string[] = [],
  clock?: DeviceOptions['clock'],
): Promise<DevicePeer> {
  const created = await createDevice({
    id,
    dataDir: join(dir, id),
    server: url,
    ...(siteKey === undefined ? {} : { siteKey }),
    ...(clock === undefined ? {} : { clock }),
    lan: { enabled: true, mdns: false, peers },
  })
  closers.push(() => created.close())
  return created
}

/** A server on LevelDB with user U1, and a blockable proxy in front of it. */
async function proxiedSite(): Promise<{
  dir: string
  data: string
  peer: ServerPeer
  port: number
  proxy: Awaited<ReturnType<typeof blockableProxy>>
  siteKey: string | undefined
}> {
  const dir = await tempDir()
  const data = join(dir, 'server')
  const peer = await server(data)
  const port = Number(new URL(peer.url).port)
  const proxy = await blockableProxy(port)
  closers.push(async () => proxy.close())
  await peer.users.put({ id: 'U1', name: 'User 1' })
  return { dir, data, peer, port, proxy, siteKey: peer.siteKey }
}

/** A server on LevelDB with user U1, and device D synced with it. */
async function siteWithDevice(): Promise<{
  dir: string
  data: string
  peer: ServerPeer
  d: DevicePeer
}> {
  const dir = await tempDir()
  const data = join(dir, 'server')
  const peer = await server(data)
  await peer.users.put({ id: 'U1', name: 'User 1' })
  const d = await device('D', dir, peer)
  await d.sync.whenReady()
  return { dir, data, peer, d }
}

/** The roster as a device or the server shows it, sorted by id. */
const rosterOf = (peer: ServerPeer | DevicePeer): unknown =>
  [...peer.users.list()].sort((a, b) => a.id.localeCompare(b.id))

describe('a server restored from a backup of its data directory', () => {
  it('devices drop what the restore rolled back, get what the restored server writes, and keep their own', async () => {
    const dir = await tempDir()
    const data = join(dir, 'server')
    let peer = await server(data)
    for (let i = 1; i <= 3; i++) await peer.users.put({ id: `U${i}`, name: `User ${i}` })
    const d = await device('D', dir, peer)
    const e = await device('E', dir, peer)
    await d.sync.whenReady()
    await e.sync.whenReady()
    const before = peer.replica.clientId

    // The backup: a copy of the stopped server's directory.
    peer = await backUp(peer, data, join(dir, 'backup'))
    // A clean restart takes a fresh clientID too.
    expect(peer.replica.openKind).toBe('clean')
    expect(peer.replica.clientId).not.toBe(before)
    await peer.users.patch('U2', { name: 'Renamed after the backup' })
    await d.sync.delta()
    await e.sync.delta()
    expect(e.users.get('U2')?.name).toBe('Renamed after the backup')
    // D fills a vacant field; the server adopts it.
    await d.users.patch('U3', { email: 'd3@example.com' })
    await d.sync.whenIdle()
    expect(peer.users.get('U3')?.email).toBe('d3@example.com')

    // The restore: the directory as it was at the backup.
    peer = await restoreTo(peer, data, join(dir, 'backup'))
    expect(peer.users.get('U2')?.name).toBe('User 2')
    // Written before any device is back: under ids no device holds.
    await peer.users.put({ id: 'A0', name: 'Written right after the restore' })

    for (const dev of [d, e]) await dev.sync.delta()
    await peer.users.patch('U1', { department: 'Later' })
    for (const dev of [d, e]) await dev.sync.delta()

    // Every view is the server's: the rename rolled back, the new user
    // there, and D's fill (its own entry, carried) adopted again.
    expect(peer.users.get('U3')?.email).toBe('d3@example.com')
    expect(peer.users.get('A0')?.name).toBe('Written right after the restore')
    for (const dev of [d, e]) {
      expect(rosterOf(dev)).toEqual(rosterOf(peer))
      const logged = dev.events.query({ type: 'restore-detected' })
      expect(logged.length).toBeGreaterThan(0)
      expect(logged[0]?.message).toMatch(/restored from a backup/)
      // A move to another generation of the same number says why (a probe
      // read "from generation 0 to 0" as nothing).
      for (const moved of dev.events.query({ type: 'generation-moved' }))
        if (/from generation (\d+) to \1\b/.test(moved.message ?? ''))
          expect(moved.message).toMatch(/another of the same number: the server was restored/)
    }
  })
  it('a terminal that deleted a user shows it again once the restored server adopts its fill again, heard first over the LAN', async () => {
    // D's clock runs 20 minutes ahead, so the server's clock follows D's
    // stamps, and its adoption of D's fill after the restore takes the very
    // stamp D's delete mark names. D hears that adoption from E over the
    // LAN before its own link to the restored server opens: the stamps
    // alone said "the version D deleted", and D kept the user hidden.
    const site = await proxiedSite()
    const { dir, data, port, siteKey } = site
    const link = site.proxy
    let peer = site.peer
    const e = await lanDevice('E', dir, peer.url, siteKey)
    const d = await lanDevice(
      'D',
      dir,
      peer.url.replace(`:${port}`, `:${link.port}`),
      siteKey,
      e.lanAddresses,
      {
        now: () => Date.now() + 20 * 60_000,
        setTimeout: (fn, ms) => setTimeout(fn, ms),
        clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
      },
    )
    await e.sync.whenReady()
    await d.sync.whenReady()

    peer = await backUp(peer, data, join(dir, 'backup'))
    // After the backup: D fills U1 (the server adopts it), then deletes it.
    await d.users.patch('U1', { email: 'd@example.com' })
    await d.sync.whenIdle()
    await eventually(() => expect(e.users.get('U1')?.email).toBe('d@example.com'))
    await eventually(() => expect(d.users.get('U1')?.email).toBe('d@example.com'))
    expect(await d.users.delete('U1')).toBe(true)

    // D loses its server; the server is restored; E finds it and carries
    // D's fill (heard over the LAN), which the server adopts again.
    link.block()
    peer = await restoreTo(peer, data, join(dir, 'backup'))
    await e.sync.delta()
    await e.sync.whenIdle()
    expect(e.events.query({ type: 'restore-detected' }).length).toBeGreaterThan(0)
    await eventually(() => expect(peer.users.get('U1')?.email).toBe('d@example.com'))
    // D hears all the restored server wrote (the adoption included) from E.
    const restored = peer.replica.clientId
    const clockOf = (doc: Y.Doc): number =>
      Y.decodeStateVector(Y.encodeStateVector(doc)).get(restored) ?? 0
    await eventually(() => expect(clockOf(d.replica.doc)).toBe(clockOf(peer.replica.doc)))
    link.unblock()
    await d.sync.delta()
    await d.sync.delta()
    expect(d.events.query({ type: 'restore-detected' }).length).toBeGreaterThan(0)
    // The server adopted the fill again after the delete: a change (rule 3).
    expect(d.users.get('U1')).toMatchObject({ name: 'User 1', email: 'd@example.com' })
  }, 60_000)
})

describe('rolled-back operations relayed over the LAN by a peer still behind', () => {
  it('are dropped at the next round of a session already open, and not taken again', async () => {
    // E, cut off from the server, still holds what the restore rolled
    // back. D joins the restored site, then links with E over the LAN and
    // hears it from E. D's server session opened before that: compared
    // with what D held at the open, no round of that session found the
    // loss, and D kept the rolled-back user for good. Found, it is not
    // enough to fetch the roster again: the refetch reopens the LAN link,
    // and E offers it all again.
    const site = await proxiedSite()
    const { dir, data, port, siteKey } = site
    const eLink = site.proxy
    let peer = site.peer
    const e = await lanDevice('E', dir, peer.url.replace(`:${port}`, `:${eLink.port}`), siteKey)
    await e.sync.whenReady()
    peer = await backUp(peer, data, join(dir, 'backup'))
    await peer.users.put({ id: 'W1', name: 'Lost with the restore' })
    await e.sync.whenIdle()
    expect(e.users.get('W1')).toBeDefined()

    eLink.block()
    peer = await restoreTo(peer, data, join(dir, 'backup'))
    // D reaches E through a proxy, opened once D's session is.
    const [lanAddress] = e.lanAddresses
    const lanPort = Number(/\/tcp\/(\d+)\//.exec(lanAddress ?? '')?.[1])
    const lan = await blockableProxy(lanPort)
    closers.push(async () => lan.close())
    lan.block()
    const d = await lanDevice('D', dir, peer.url, siteKey, [
      (lanAddress ?? '').replace(`/tcp/${lanPort}/`, `/tcp/${lan.port}/`),
    ])
    await d.sync.whenReady()
    expect(d.users.get('W1')).toBeUndefined()
    lan.unblock()
    await eventually(() => expect(d.users.get('W1')).toBeDefined(), 30_000)
    await d.sync.delta()
    expect(d.events.query({ type: 'restore-detected' })).toHaveLength(1)
    expect(d.users.get('W1')).toBeUndefined()
    // The LAN link opens again after the refetch; E offers W1 again, in
    // the same answer as what E wrote since (seen: the answer is in).
    await e.users.put({ id: 'M1', name: 'Enrolled on E' })
    await eventually(() => expect(d.users.get('M1')).toBeDefined(), 30_000)
    await d.sync.whenIdle()
    await d.sync.delta()
    expect(d.users.get('W1')).toBeUndefined()
    expect(d.events.query({ type: 'restore-detected' })).toHaveLength(1)

    eLink.unblock()
    await e.sync.delta()
    expect(e.users.get('W1')).toBeUndefined()
    for (const device of [d, e]) await device.sync.delta()
    expect(rosterOf(d)).toEqual(rosterOf(peer))
    expect(rosterOf(e)).toEqual(rosterOf(peer))
  }, 90_000)
})

describe('a restore undone by the operator (the wrong backup, then the right one)', () => {
  it('drops the note of what the first restore lost once the server holds it again', async () => {
    // After the first restore D notes the rename's clientID as lost, and
    // takes none of its operations over the LAN. The right backup brings
    // them back: the server's next answer states them, and the note goes.
    const { dir, data, d, ...site } = await siteWithDevice()
    let peer = await backUp(site.peer, data, join(dir, 'backupA'))
    await peer.users.patch('U1', { name: 'Renamed' })
    const renamedBy = peer.replica.clientId
    await d.sync.delta()
    expect(d.users.get('U1')?.name).toBe('Renamed')
    peer = await backUp(peer, data, join(dir, 'backupB'))
    peer = await restoreTo(peer, data, join(dir, 'backupA'))
    await d.sync.delta()
    expect(d.users.get('U1')?.name).toBe('User 1')
    expect(lostClocks(d.replica).has(renamedBy)).toBe(true)
    peer = await restoreTo(peer, data, join(dir, 'backupB'))
    await d.sync.delta()
    await d.sync.delta()
    expect(peer.users.get('U1')?.name).toBe('Renamed')
    expect(d.users.get('U1')?.name).toBe('Renamed')
    expect(lostClocks(d.replica).has(renamedBy)).toBe(false)
  }, 60_000)
})

describe('a restore that rolls back a delete and enrolment of a user a device filled since', () => {
  /**
   * After the backup the administrator deletes U2 and enrols it again; D
   * fills the new U2 (its entry at epoch 1); then the server is restored
   * (U2 back at epoch 0).
   */
  async function restoredBelowEpoch(): Promise<{ d: DevicePeer; peer: ServerPeer }> {
    const { dir, data, d, ...site } = await siteWithDevice()
    await site.peer.users.put({ id: 'U2', name: 'User 2' })
    await d.sync.delta()
    const peer = await backUp(site.peer, data, join(dir, 'backup'))
    await peer.users.delete('U2')
    await peer.users.put({ id: 'U2', name: 'User 2 again' })
    await d.sync.delta()
    await d.users.patch('U2', { email: 'd2@example.com' })
    await d.sync.whenIdle()
    expect(peer.users.get('U2')).toMatchObject({ name: 'User 2 again', email: 'd2@example.com' })
    return { d, peer: await restoreTo(peer, data, join(dir, 'backup')) }
  }

  it('the device is not refused for good: its fill goes on the restored user, and its later writes land', async () => {
    // D's push was refused FORBIDDEN_WRITE at every sync, for good, and D
    // never found the restore (a probe).
    const { d, peer } = await restoredBelowEpoch()
    expect(peer.users.get('U2')).toEqual({ id: 'U2', name: 'User 2' })
    await d.users.patch('U1', { email: 'd1@example.com' })
    // The first round is refused (the server names the epoch); the device
    // then fetches the roster again, carrying its entries.
    await d.sync.delta().catch(() => undefined)
    await d.sync.delta()
    await d.sync.whenIdle()
    expect(d.events.query({ type: 'restore-detected' })).toHaveLength(1)
    expect(d.sync.status().deviceToServer.state).toBe('success')
    expect(peer.users.get('U1')?.email).toBe('d1@example.com')
    expect(peer.users.get('U2')).toEqual({ id: 'U2', name: 'User 2', email: 'd2@example.com' })
    expect(rosterOf(d)).toEqual(rosterOf(peer))
  }, 60_000)

  it('takes the refusal once: rounds that fail with the server away do not find the restore again', async () => {
    const { d, peer } = await restoredBelowEpoch()
    await d.sync.delta().catch(() => undefined)
    expect(d.events.query({ type: 'restore-detected' })).toHaveLength(1)
    await peer.close()
    for (let round = 0; round < 3; round++) await d.sync.delta().catch(() => undefined)
    expect(d.events.query({ type: 'restore-detected' })).toHaveLength(1)
  }, 90_000)
})

describe("a device's log of the server's envelopes, after a restore", () => {
  it('is not offered back to the restored server: the first round is not closed RATE_LIMITED', async () => {
    // Each of the server's rolled-back envelopes offered back was refused
    // and charged to the device's link: 2,100 closed the first round after
    // a restore RATE_LIMITED (a probe). Here the burst is 30 messages.
    withLimits(netLimits, { linkMessagesBurstMax: 30 })
    const { dir, data, d, ...site } = await siteWithDevice()
    let peer = await backUp(site.peer, data, join(dir, 'backup'))
    await d.sync.delta()
    for (let i = 0; i < 60; i++) {
      await peer.users.put({ id: `W${i}`, name: `Written after the backup ${i}` })
      // One tell each (the fan-out merges what comes within 10 ms).
      await new Promise((resolve) => setTimeout(resolve, 15))
    }
    await eventually(() => expect(d.users.get('W59')).toBeDefined())
    peer = await restoreTo(peer, data, join(dir, 'backup'))
    await d.sync.delta()
    expect(d.sync.status().deviceToServer.state).toBe('success')
    expect(d.events.query({ type: 'sync-failed' })).toEqual([])
    expect(d.users.get('W0')).toBeUndefined()
    expect(peer.events.query({ type: 'write-refused', deviceId: 'D' })).toEqual([])
  }, 60_000)
})

describe('a backup copied while the server ran', () => {
  it('is found once, and a delete made after the refetch holds through later rounds', async () => {
    // The lost operations are under the clientID the restored server still
    // had some of: compared with what the device held when its session
    // opened, every round of that session found the loss again, fetched the
    // roster again, and settled a later mark as if the restore undid it.
    const dir = await tempDir()
    const data = join(dir, 'server')
    let peer = await server(data)
    for (let i = 1; i <= 3; i++) await peer.users.put({ id: `U${i}`, name: `User ${i}` })
    const d = await device('D', dir, peer)
    await d.sync.whenReady()
    await cp(data, join(dir, 'backup'), { recursive: true })
    await peer.users.patch('U1', { name: 'Lost with the restore' })
    await d.sync.whenIdle()
    expect(d.users.get('U1')?.name).toBe('Lost with the restore')

    peer = await restoreTo(peer, data, join(dir, 'backup'))
    await d.sync.delta()
    expect(d.events.query({ type: 'restore-detected' })).toHaveLength(1)
    expect(d.users.get('U1')?.name).toBe('User 1')
    await peer.users.patch('U2', { name: 'Renamed after the restore' })
    await d.sync.delta()
    expect(d.users.get('U2')?.name).toBe('Renamed after the restore')
    expect(await d.users.delete('U2')).toBe(true)
    for (let round = 0; round < 3; round++) await d.sync.delta()
    expect(d.events.query({ type: 'restore-detected' })).toHaveLength(1)
    expect(d.users.get('U2')).toBeUndefined()
  }, 60_000)
})

describe('a server restored from a backup taken before a compaction', () => {
  it('a terminal moving back to the generation it left keeps hiding what it deleted, until the restored server changes it', async () => {
    const dir = await tempDir()
    const data = join(dir, 'server')
    let peer = await server(data)
    for (let i = 1; i <= 4; i++) await peer.users.put({ id: `U${i}`, name: `User ${i}` })
    // D's clock runs 20 minutes ahead: the server's clock follows D's
    // stamps after the backup, so what it writes after the restore is
    // stamped below the renames D deleted (stamps cannot tell a change).
    const d = await device('D', dir, peer, 20 * 60_000)
    await d.sync.whenReady()

    // The backup, on the first generation.
    peer = await backUp(peer, data, join(dir, 'backup'))
    await peer.compactHistory()
    await d.sync.delta()
    await syncUntilOn(d, 1)
    await d.users.patch('U4', { email: 'd4@example.com' })
    await d.sync.whenIdle()
    expect(peer.users.get('U4')?.email).toBe('d4@example.com')
    // On the new generation: the server renames U2 and U3; D deletes all three.
    await peer.users.patch('U2', { name: 'Renamed after the compaction' })
    await peer.users.patch('U3', { name: 'Renamed after the compaction' })
    await d.sync.delta()
    expect(d.users.get('U2')?.name).toBe('Renamed after the compaction')
    for (const id of ['U1', 'U2', 'U3']) expect(await d.users.delete(id)).toBe(true)

    // The restore: the first generation, as at the backup. The server
    // then changes U3 (a change of the user, whatever its stamp).
    peer = await restoreTo(peer, data, join(dir, 'backup'))
    await peer.users.patch('U3', { department: 'Changed after the restore' })
    // Stamped below the version D deleted.
    const markOf = (id: string): number => d.replica.localOf(asUserId(id)).deleted?.t ?? 0
    expect(peer.replica.replicaOf(asUserId('U3')).server?.t).toBeLessThan(markOf('U3'))
    await syncUntilOn(d, 0)
    await d.sync.delta()

    // U1 and U2 only rolled back: still hidden on D. U3 changed: shown.
    expect(d.users.get('U1')).toBeUndefined()
    expect(d.users.get('U2')).toBeUndefined()
    expect(d.users.get('U3')).toMatchObject({
      name: 'User 3',
      department: 'Changed after the restore',
    })
    // The marks now name the restored entries: the server's next change shows the user.
    await peer.users.patch('U2', { department: 'Later' })
    await d.sync.delta()
    expect(d.users.get('U2')).toMatchObject({ name: 'User 2', department: 'Later' })
    expect(d.users.get('U1')).toBeUndefined()
  }, 60_000)
})

describe('a server restored from a backup, then compacted before a terminal is back', () => {
  it('the terminal keeps hiding what the restore only rolled back, and shows what the server changed since', async () => {
    const dir = await tempDir()
    const data = join(dir, 'server')
    let peer = await server(data)
    for (let i = 1; i <= 3; i++) await peer.users.put({ id: `U${i}`, name: `User ${i}` })
    const d = await device('D', dir, peer)
    await d.sync.whenReady()

    peer = await backUp(peer, data, join(dir, 'backup'))
    // After the backup (lost with the restore): U2 renamed; D deletes U1 to U3.
    await peer.users.patch('U2', { name: 'Renamed after the backup' })
    await d.sync.delta()
    expect(d.users.get('U2')?.name).toBe('Renamed after the backup')
    for (const id of ['U1', 'U2', 'U3']) expect(await d.users.delete(id)).toBe(true)
    await d.close()

    // The restore, a change of U3, and a new generation, all before D is back.
    peer = await restoreTo(peer, data, join(dir, 'backup'))
    await peer.users.patch('U3', { department: 'Changed after the restore' })
    await peer.compactHistory()
    const back = await device('D', dir, peer)
    await syncUntilOn(back, 1)
    await back.sync.delta()

    expect(back.users.get('U1')).toBeUndefined()
    expect(back.users.get('U2')).toBeUndefined()
    expect(back.users.get('U3')).toMatchObject({ department: 'Changed after the restore' })
    await peer.users.patch('U2', { department: 'Later' })
    await back.sync.delta()
    expect(back.users.get('U2')).toMatchObject({ name: 'User 2', department: 'Later' })
  }, 60_000)
})

describe('two restores and a compaction between them', () => {
  it('a terminal keeps hiding the version it deleted when a second restore brings it back', async () => {
    // Backup A holds U1 as enrolled, backup B the rename D deleted. The
    // server is restored to A and compacts before D is back (D's mark is
    // lowered to A's U1, kept hidden), then restored to B: D moves back to
    // the generation it left, whose U1 is exactly the version it deleted.
    const dir = await tempDir()
    const data = join(dir, 'server')
    let peer = await server(data)
    const port = Number(new URL(peer.url).port)
    for (let i = 1; i <= 2; i++) await peer.users.put({ id: `U${i}`, name: `User ${i}` })
    let d = await device('D', dir, peer)
    await d.sync.whenReady()
    peer = await backUp(peer, data, join(dir, 'backupA'))
    await peer.users.patch('U1', { name: 'Renamed' })
    await d.sync.delta()
    expect(d.users.get('U1')?.name).toBe('Renamed')
    for (const id of ['U1', 'U2']) expect(await d.users.delete(id)).toBe(true)
    await d.close()
    await peer.close()
    await cp(data, join(dir, 'backupB'), { recursive: true })

    const restore = async (backup: string): Promise<ServerPeer> => {
      await peer.close()
      await rm(data, { recursive: true, force: true })
      await cp(join(dir, backup), data, { recursive: true })
      return server(data, port)
    }
    peer = await restore('backupA')
    await peer.compactHistory()
    d = await device('D', dir, peer)
    await syncUntilOn(d, 1)
    await d.sync.delta()
    expect(d.users.get('U1')).toBeUndefined()
    expect(d.users.get('U2')).toBeUndefined()

    peer = await restore('backupB')
    expect(peer.users.get('U1')?.name).toBe('Renamed')
    await syncUntilOn(d, 0)
    await d.sync.delta()
    expect(d.users.get('U1')).toBeUndefined()
    expect(d.users.get('U2')).toBeUndefined()
  }, 60_000)

  it('a terminal shows a change the restored server made after a rollback it heard of, through a compaction', async () => {
    // A review: the mark, lowered to the rolled-back entry (its highest
    // stamp kept), was compared by that highest stamp at the move forward,
    // and a change stamped up to it (E's clock 20 minutes ahead had pushed
    // the lost stamps up) stayed hidden.
    const dir = await tempDir()
    const data = join(dir, 'server')
    let peer = await server(data)
    await peer.users.put({ id: 'U1', name: 'User 1' })
    await peer.users.put({ id: 'U2', name: 'User 2' })
    let d = await device('D', dir, peer)
    const e = await device('E', dir, peer, 20 * 60_000)
    await d.sync.whenReady()
    await e.sync.whenReady()
    peer = await backUp(peer, data, join(dir, 'backup'))
    await e.users.patch('U2', { email: 'e2@example.com' })
    await e.sync.whenIdle()
    await e.close()
    await peer.users.patch('U1', { name: 'Renamed' })
    await d.sync.delta()
    expect(await d.users.delete('U1')).toBe(true)

    peer = await restoreTo(peer, data, join(dir, 'backup'))
    await d.sync.delta()
    await d.sync.delta()
    expect(d.users.get('U1')).toBeUndefined()
    const mark = d.replica.localOf(asUserId('U1')).deleted
    expect(mark?.h).toBeGreaterThan(mark?.t ?? 0)
    await d.close()
    await peer.users.patch('U1', { name: 'Changed after the restore' })
    expect(peer.replica.replicaOf(asUserId('U1')).server?.t).toBeLessThanOrEqual(mark?.h ?? 0)
    await peer.compactHistory()
    d = await device('D', dir, peer)
    await syncUntilOn(d, 1)
    await d.sync.delta()
    expect(d.users.get('U1')?.name).toBe('Changed after the restore')
  }, 60_000)

  it('a terminal shows the user again when an undone restore brings back a version newer than the one it deleted', async () => {
    // D deleted U1 on the version a restore rolled back to; the operator
    // then undoes the restore: U1 as D held it before, which D never deleted.
    const dir = await tempDir()
    const data = join(dir, 'server')
    let peer = await server(data)
    const port = Number(new URL(peer.url).port)
    await peer.users.put({ id: 'U1', name: 'User 1' })
    const d = await device('D', dir, peer)
    await d.sync.whenReady()
    peer = await backUp(peer, data, join(dir, 'backupA'))
    await peer.compactHistory()
    await syncUntilOn(d, 1)
    await peer.users.patch('U1', { name: 'New' })
    await d.sync.delta()
    expect(d.users.get('U1')?.name).toBe('New')
    await peer.close()
    await cp(data, join(dir, 'backupB'), { recursive: true })

    await rm(data, { recursive: true, force: true })
    await cp(join(dir, 'backupA'), data, { recursive: true })
    peer = await server(data, port)
    await syncUntilOn(d, 0)
    await d.sync.delta()
    expect(d.users.get('U1')?.name).toBe('User 1')
    expect(await d.users.delete('U1')).toBe(true)

    peer = await restoreTo(peer, data, join(dir, 'backupB'))
    await syncUntilOn(d, 1)
    await d.sync.delta()
    expect(d.users.get('U1')).toMatchObject({ name: 'New' })
    expect(peer.users.get('U1')).toMatchObject({ name: 'New' })
  }, 60_000)
})

describe('two restores within one generation', () => {
  // Backup A holds U1 as enrolled, backup B the rename D deleted. The first
  // restore rolls U1 back to A's version (D's mark is lowered to it); the
  // second brings back exactly the version D deleted, whose item D's
  // document no longer holds after the first refetch. When the restored A
  // wrote something D heard, B lacks it: D sees a second restore and
  // fetches again; when not, B only holds what D lacks, a delta.
  it.each([
    ['the server wrote nothing between them (a delta to B)', false],
    ['the server wrote between them (a second refetch)', true],
  ])(
    'a terminal keeps hiding the version it deleted when the second restore brings it back: %s',
    async (_, writeBetween) => {
      const dir = await tempDir()
      const data = join(dir, 'server')
      let peer = await server(data)
      await peer.users.put({ id: 'U1', name: 'User 1' })
      await peer.users.put({ id: 'U2', name: 'User 2' })
      const d = await device('D', dir, peer)
      await d.sync.whenReady()
      peer = await backUp(peer, data, join(dir, 'backupA'))
      await peer.users.patch('U1', { name: 'Renamed' })
      await d.sync.delta()
      expect(d.users.get('U1')?.name).toBe('Renamed')
      expect(await d.users.delete('U1')).toBe(true)
      peer = await backUp(peer, data, join(dir, 'backupB'))

      peer = await restoreTo(peer, data, join(dir, 'backupA'))
      await d.sync.delta()
      await d.sync.delta()
      expect(d.events.query({ type: 'restore-detected' }).length).toBe(1)
      expect(d.users.get('U1')).toBeUndefined()
      if (writeBetween) {
        await peer.users.put({ id: 'A0', name: 'Written on A' })
        await d.sync.delta()
        expect(d.users.get('A0')?.name).toBe('Written on A')
      }

      peer = await restoreTo(peer, data, join(dir, 'backupB'))
      expect(peer.users.get('U1')?.name).toBe('Renamed')
      await d.sync.delta()
      await d.sync.delta()
      expect(d.events.query({ type: 'restore-detected' }).length).toBe(writeBetween ? 2 : 1)
      expect(d.users.get('U1')).toBeUndefined()
      expect(d.users.get('U2')?.name).toBe('User 2')
      expect(d.users.get('A0')).toBeUndefined()

      // The server's next change of U1 shows it again (rule 3).
      await peer.users.patch('U1', { department: 'Later' })
      await d.sync.delta()
      expect(d.users.get('U1')).toMatchObject({ name: 'Renamed', department: 'Later' })
    },
    60_000,
  )

  it('a terminal keeps hiding the version it deleted through three restores, the last bringing it back', async () => {
    // Backups C (U1 enrolled), A (renamed once) and B (renamed twice, the
    // version D deleted), each from another server run (clientID). The
    // restores go to A, then C (older still: the mark keeps what it hid at
    // the first), then B.
    const dir = await tempDir()
    const data = join(dir, 'server')
    let peer = await server(data)
    await peer.users.put({ id: 'U1', name: 'User 1' })
    const d = await device('D', dir, peer)
    await d.sync.whenReady()
    peer = await backUp(peer, data, join(dir, 'backupC'))
    await peer.users.patch('U1', { name: 'Renamed once' })
    peer = await backUp(peer, data, join(dir, 'backupA'))
    await peer.users.patch('U1', { name: 'Renamed twice' })
    await d.sync.delta()
    expect(d.users.get('U1')?.name).toBe('Renamed twice')
    expect(await d.users.delete('U1')).toBe(true)
    peer = await backUp(peer, data, join(dir, 'backupB'))
    for (const [backup, name] of [
      ['backupA', 'Renamed once'],
      ['backupC', 'User 1'],
      ['backupB', 'Renamed twice'],
    ] as const) {
      peer = await restoreTo(peer, data, join(dir, backup))
      expect(peer.users.get('U1')?.name).toBe(name)
      await d.sync.delta()
      await d.sync.delta()
      expect(d.users.get('U1'), backup).toBeUndefined()
    }
  }, 60_000)
})

/** Syncs `peer` until it is on generation `n` (its record; n 0 when it never moved). */
async function syncUntilOn(peer: DevicePeer, n: number): Promise<void> {
  const on = (): number =>
    (peer.replica.record('sync', 'generation') as { n?: number } | undefined)?.n ?? 0
  for (let round = 0; on() !== n; round++) {
    if (round === 20) throw new Error(`${peer.id} is on generation ${on()}, not ${n}`)
    await peer.sync.delta().catch(() => undefined)
  }
}

/** A TCP relay to the server's port on 127.0.0.1 whose connections can be cut and refused. */
async function blockableProxy(target: number): Promise<{
  port: number
  block(): void
  unblock(): void
  close(): void
}> {
  let blocked = false
  const sockets = new Set<Socket>()
  const relay = createNetServer((inbound) => {
    if (blocked) {
      inbound.destroy()
      return
    }
    const outbound = connect(target, '127.0.0.1')
    sockets.add(inbound)
    sockets.add(outbound)
    inbound.pipe(outbound)
    outbound.pipe(inbound)
    const end = (): void => {
      inbound.destroy()
      outbound.destroy()
      sockets.delete(inbound)
      sockets.delete(outbound)
    }
    for (const socket of [inbound, outbound]) {
      socket.on('error', end)
      socket.on('close', end)
    }
  })
  await new Promise<void>((resolve) => relay.listen(0, '127.0.0.1', resolve))
  return {
    port: (relay.address() as AddressInfo).port,
    block() {
      blocked = true
      for (const socket of sockets) socket.destroy()
    },
    unblock() {
      blocked = false
    },
    close() {
      for (const socket of sockets) socket.destroy()
      relay.close()
    },
  }
}
