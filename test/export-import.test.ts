/**
 * Export / import (SEMANTICS.md, "Export / import"; issue 10): the server
 * exports chosen users in a signed file that expires after 15 minutes; a
 * device whose sync is stopped imports it; its later sync with the server
 * neither conflicts nor duplicates; a bad file changes nothing.
 */
import { createCipheriv, createDecipheriv, createHmac, hkdfSync } from 'node:crypto'
import * as decoding from 'lib0/decoding'
import * as encoding from 'lib0/encoding'
import { afterEach, describe, expect, it } from 'vitest'
import { decodeValue, encodeValue } from '../core/codec.js'
import { hasCode, SyncError } from '../core/errors.js'
import { derivations } from '../core/export-file.js'
import { asUserId } from '../core/ids.js'
import { limits } from '../core/limits.js'
import type { Connection, Transport } from '../core/transport.js'
import type { Store } from '../core/store.js'
import { createDevice, type DevicePeer } from '../peers/create-device.js'
import { verifyPin } from '../peers/pin.js'
import { createServer, type ServerPeer } from '../server-peer/create-server.js'
import { memoryStore } from '../storage/level-store.js'
import { memoryPair } from '../transports/memory-transport.js'
import { KeptOpenStore } from './helpers/forwarding-store.js'
import { ManualClock, settle } from './helpers/manual-clock.js'

const SITE_KEY = 'export-site-key'
/** The passphrase the test exports are encrypted under. */
const PASS = 'correct horse battery staple'
const MINUTE = 60_000
const closers: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close()
})

interface Site {
  readonly clock: ManualClock
  readonly server: ServerPeer
  readonly transport: Transport
  down(): void
  up(): void
}

async function site(
  extra: Partial<Parameters<typeof createServer>[0]> = {},
  clock = new ManualClock(),
): Promise<Site> {
  const server = await createServer({
    store: memoryStore(),
    clock,
    listen: false,
    siteKey: SITE_KEY,
    // The cheapest scrypt a device accepts keeps the tests quick; one test
    // checks the default.
    exportKdfLogN: limits.exportKdfLogNMin,
    ...extra,
  })
  closers.push(() => server.close())
  let isDown = false
  const open = new Set<Connection>()
  return {
    clock,
    server,
    transport: {
      connect: async (url) => {
        if (isDown) throw new SyncError('SYNC_FAILED', 'connection refused (server down)')
        const [mine, theirs] = memoryPair('device', 'server')
        server.accept(theirs, url)
        open.add(mine)
        return mine
      },
      close: async () => undefined,
    },
    down() {
      isDown = true
      for (const conn of open) conn.close(1006, 'network down')
      open.clear()
    },
    up() {
      isDown = false
    },
  }
}

async function device(
  s: Site,
  extra: Partial<Parameters<typeof createDevice>[0]> & { noServer?: boolean } = {},
): Promise<DevicePeer> {
  const { noServer, ...rest } = extra
  const d = await createDevice({
    id: 'D1',
    store: memoryStore(),
    clock: s.clock,
    ...(noServer === true ? {} : { server: 'ws://sim-server', serverTransport: s.transport }),
    siteKey: SITE_KEY,
    ...rest,
  })
  closers.push(() => d.close())
  return d
}

/** Every key and value of a store, to show that a refused import changed nothing. */
async function dump(store: Store): Promise<Map<string, string>> {
  const out = new Map<string, string>()
  for await (const [key, value] of store.range({ gte: '', lt: '\uffff' }))
    out.set(key, Buffer.from(value).toString('hex'))
  return out
}

async function roster(server: ServerPeer): Promise<void> {
  await server.users.put({ id: 'u1', name: 'Ann Lee', groups: ['lobby'], status: 'active' })
  await server.users.put({ id: 'u2', name: 'Bo Chen', groups: ['lab'] })
  await server.users.put({
    id: 'u3',
    name: 'Cy Park',
    groups: ['lobby', 'lab'],
    cards: [{ type: 'csn', value: '04A1B2C3' }],
    fingerprints: [new Uint8Array([1, 2, 3])],
  })
  await server.users.put({ id: 'u4', name: 'Di Ross' })
}

describe('server.exportUsers', () => {
  it('exports users by id and by group, expiring 15 minutes after it was made', async () => {
    const s = await site()
    await roster(s.server)
    const byId = await s.server.exportUsers({ passphrase: PASS, userIds: ['u4'] })
    expect(byId.expiresAt).toBe(s.clock.now() + 15 * MINUTE)
    expect(byId.users).toBe(1)
    const byGroup = await s.server.exportUsers({
      passphrase: PASS,
      groupIds: ['lobby'],
      userIds: ['u2'],
    })
    expect(byGroup.users).toBe(3)
    expect(Buffer.from(byGroup.file.subarray(0, 8)).toString('latin1')).toBe('RSYNCEXP')
    expect(s.server.events.query({ type: 'users-exported' })).toHaveLength(2)
  })

  it('derives passphrase keys one at a time, all of them done (HTTP probe)', async () => {
    // 16 passphrase exports at once held libuv's thread pool, which the
    // store's writes share: a write waited 2.8 s instead of 32 ms.
    const s = await site()
    await roster(s.server)
    derivations.mostAtOnce = 0
    const made = await Promise.all(
      Array.from({ length: 6 }, () => s.server.exportUsers({ passphrase: PASS, userIds: ['u4'] })),
    )
    expect(made.map((m) => m.users)).toEqual([1, 1, 1, 1, 1, 1])
    expect(derivations.mostAtOnce).toBe(1)
    expect(derivations.running).toBe(0)
  })

  it('refuses bad requests with typed errors', async () => {
    const s = await site()
    await roster(s.server)
    const refused = async (request: unknown): Promise<string> => {
      try {
        await s.server.exportUsers(request as { userIds: string[] })
        return 'resolved'
      } catch (error) {
        return (error as { code: string }).code
      }
    }
    expect(await refused({})).toBe('INVALID_OPTIONS')
    expect(await refused({ userIds: [] })).toBe('INVALID_OPTIONS')
    expect(await refused({ userIds: 'u1' })).toBe('INVALID_OPTIONS')
    expect(await refused({ userIds: ['u1'], extra: 1 })).toBe('INVALID_OPTIONS')
    expect(await refused({ userIds: ['nobody'] })).toBe('USER_NOT_FOUND')
    // A passphrase that --passphrase-file could not give back (a probe).
    expect(await refused({ userIds: ['u1'], passphrase: 'abcdefghijkl\n' })).toBe(
      'EXPORT_PASSPHRASE_INVALID',
    )
    expect(await refused({ userIds: ['u1'], passphrase: 'abcdef\tghijkl' })).toBe(
      'EXPORT_PASSPHRASE_INVALID',
    )
    // Each group named needs a live member, named by id too or not.
    expect(await refused({ groupIds: ['lobby', 'nowhere'] })).toBe('GROUP_NOT_FOUND')
    expect(await refused({ groupIds: ['lobby'], userIds: ['u2'] })).toBe('resolved')
    const ids = Array.from({ length: limits.usersPerExportMax + 1 }, (_, i) => `x${i}`)
    for (const id of ids) await s.server.users.put({ id, name: id })
    expect(await refused({ userIds: ids })).toBe('EXPORT_TOO_LARGE')
    expect(await refused({ userIds: ids.slice(1) })).toBe('resolved')
    // Too many ids is the answer before any lookup: not "nobody is not found".
    expect(await refused({ userIds: ['nobody', ...ids] })).toBe('EXPORT_TOO_LARGE')
    const groups = Array.from({ length: limits.groupsPerExportMax + 1 }, (_, i) => `g${i}`)
    expect(await refused({ groupIds: groups })).toBe('EXPORT_TOO_LARGE')
    await s.server.users.delete('u4')
    expect(await refused({ userIds: ['u4'] })).toBe('USER_NOT_FOUND')
  })

  it('takes its caps from the options', async () => {
    const s = await site({ exportUsersMax: 2, exportGroupsMax: 1 })
    await roster(s.server)
    await expect(
      s.server.exportUsers({ passphrase: PASS, groupIds: ['lobby', 'lab'] }),
    ).rejects.toMatchObject({
      code: 'EXPORT_TOO_LARGE',
    })
    // lobby has u1 and u3; with u2 that is 3 users, past 2.
    // Counting stops past the cap: the message says "more than", not a size
    // the group does not have (a probe read "501" of a group of 521).
    await expect(
      s.server.exportUsers({ passphrase: PASS, groupIds: ['lobby'], userIds: ['u2'] }),
    ).rejects.toMatchObject({
      code: 'EXPORT_TOO_LARGE',
      message: 'the export holds more than 2 users (with the groups named); the limit is 2',
    })
    expect((await s.server.exportUsers({ passphrase: PASS, groupIds: ['lobby'] })).users).toBe(2)
  })
})

describe('device.importUsers', () => {
  it('shows the users as the server has them, and the later sync neither conflicts nor duplicates', async () => {
    const s = await site()
    await s.server.users.put({ id: 'u0', name: 'Zed' })
    const d = await device(s)
    await d.sync.full()
    s.down()
    await settle()
    await roster(s.server)
    const { file } = await s.server.exportUsers({ passphrase: PASS, groupIds: ['lobby', 'lab'] })
    const result = await d.importUsers(file, { passphrase: PASS })
    expect(result).toMatchObject({ imported: 3, unchanged: 0 })
    expect(d.users.list().map((u) => u.id)).toEqual(['u0', 'u1', 'u2', 'u3'])
    expect(d.users.get('u3')).toEqual(s.server.users.get('u3'))
    expect(d.events.query({ type: 'users-imported' })).toHaveLength(1)
    // Offline edits on imported users follow the rules as after a sync.
    await d.users.patch('u1', { email: 'ann@example.com' }) // fills a vacant field
    await d.users.patch('u2', { name: 'Bob' }) // the server's name wins (rule 1)
    expect(d.users.get('u2')?.name).toBe('Bo Chen')
    await d.users.delete('u3') // hidden on this device only (rule 3)
    expect(d.users.get('u3')).toBeUndefined()
    // Back online: the server's entries arrive, the same as the imported ones.
    s.up()
    await d.sync.delta()
    await d.sync.whenIdle()
    expect(s.server.users.get('u1')?.email).toBe('ann@example.com')
    expect(s.server.users.get('u2')?.name).toBe('Bo Chen')
    expect(s.server.users.get('u3')?.name).toBe('Cy Park')
    // u4 was never exported: it comes by sync.
    expect(d.users.list().map((u) => u.id)).toEqual(['u0', 'u1', 'u2', 'u4'])
    expect(d.users.get('u1')).toEqual(s.server.users.get('u1'))
    expect(d.replica.importedCount).toBe(0)
    expect(s.server.events.query({ type: 'write-refused' })).toHaveLength(0)
    // A full sync brings the server's roster whole, u3 included: a user
    // deleted on a device shows again after a full sync (rule 3).
    await d.sync.full()
    expect(d.users.list()).toEqual(s.server.users.list())
  })

  it('is spent by the next sync: a file made before its server was restored from a backup shows nothing the server lost (operator probe)', async () => {
    // The server restored to a backup taken before the file was made: the
    // imported entries outranked its older ones, and a user it no longer
    // had kept a working card on the device, delta after delta.
    const clock = new ManualClock()
    const open = (store: Store): Promise<ServerPeer> =>
      createServer({
        store,
        clock,
        listen: false,
        siteKey: SITE_KEY,
        exportKdfLogN: limits.exportKdfLogNMin,
      })
    const live = new KeptOpenStore(memoryStore())
    let server = await open(live)
    closers.push(() => server.close())
    let up = true
    const links = new Set<Connection>()
    const transport: Transport = {
      connect: async (url) => {
        if (!up) throw new SyncError('SYNC_FAILED', 'connection refused (server down)')
        const [mine, theirs] = memoryPair('device', 'server')
        server.accept(theirs, url)
        links.add(mine)
        return mine
      },
      close: async () => undefined,
    }
    await server.users.put({ id: 'u1', name: 'Old' })
    const d = await createDevice({
      id: 'D1',
      store: memoryStore(),
      clock,
      server: 'ws://sim-server',
      serverTransport: transport,
      siteKey: SITE_KEY,
    })
    closers.push(() => d.close())
    await d.sync.full()
    up = false
    for (const link of links) link.close(1006, 'network down')
    await settle()
    // The backup: a copy of the server's store.
    const backup = memoryStore()
    for await (const [key, value] of live.range({ gte: '', lt: '\uffff' }))
      await backup.put(key, value)
    await clock.advance(1_000)
    await server.users.patch('u1', { name: 'New (lost by the restore)' })
    await server.users.put({
      id: 'u9',
      name: 'Phantom',
      cards: [{ type: 'csn', value: '0BADC0DE' }],
    })
    const { file } = await server.exportUsers({ passphrase: PASS, userIds: ['u1', 'u9'] })
    // The restore, then the device's import of the file, then its syncs.
    await server.close()
    server = await open(backup)
    await d.importUsers(file, { passphrase: PASS })
    expect(d.users.get('u9')?.name).toBe('Phantom')
    up = true
    await d.sync.delta()
    expect(d.users.list()).toEqual(server.users.list())
    expect(d.users.get('u1')?.name).toBe('Old')
    expect(d.replica.importedCount).toBe(0)
  })

  it("carries an adopted field's origin: a fill made before the adoption still wins after an import", async () => {
    const s = await site()
    await s.server.users.put({ id: 'u1', name: 'Ann Lee' })
    const a = await device(s, { id: 'DA' })
    const b = await device(s, { id: 'DB' })
    for (const d of [a, b]) await d.sync.full()
    s.down()
    await settle()
    await s.clock.advance(1_000)
    await a.users.patch('u1', { email: 'first@example.com' })
    await s.clock.advance(1_000)
    await b.users.patch('u1', { email: 'later@example.com' })
    await s.clock.advance(60_000)
    s.up()
    await a.sync.delta()
    await a.sync.whenIdle()
    const held = s.server.replica.replicaOf(asUserId('u1')).server
    expect(held?.f?.email).toBe('first@example.com')
    expect(held?.a?.email?.[0]?.[1]).toBe('DA')
    const { file } = await s.server.exportUsers({ passphrase: PASS, userIds: ['u1'] })
    s.down()
    await settle()
    await b.importUsers(file, { passphrase: PASS })
    expect(b.replica.replicaOf(asUserId('u1')).server).toEqual(held)
    // b's own fill was made before the adoption and is later: it shows.
    expect(b.users.get('u1')?.email).toBe('later@example.com')
    s.up()
    await b.sync.delta()
    await b.sync.whenIdle()
    expect(s.server.users.get('u1')?.email).toBe('later@example.com')
  })

  it('keeps what is newer: an older file changes nothing, a server delete wins', async () => {
    const s = await site()
    await roster(s.server)
    const d = await device(s)
    const old = await s.server.exportUsers({ passphrase: PASS, userIds: ['u1', 'u2'] })
    await s.server.users.patch('u1', { name: 'Ann L.' })
    await d.sync.full()
    s.down()
    await settle()
    const result = await d.importUsers(old.file, { passphrase: PASS })
    expect(result).toMatchObject({ imported: 0, unchanged: 2 })
    expect(d.users.get('u1')?.name).toBe('Ann L.')
    // A file from before a server delete brings the user back only until
    // the device learns of the delete.
    await s.server.users.delete('u4')
    const d2 = await device(s, {
      id: 'D2',
      noServer: true,
      serverKeyFingerprint: s.server.keyFingerprint,
    })
    s.up()
    const before = await s.server.exportUsers({ passphrase: PASS, userIds: ['u2'] })
    await s.server.users.delete('u2')
    expect((await d2.importUsers(before.file, { passphrase: PASS })).imported).toBe(1)
    expect(d2.users.get('u2')?.name).toBe('Bo Chen')
    await d.sync.delta()
    expect(d.users.get('u2')).toBeUndefined()
  })

  it('works on a device that never synced (given the server key fingerprint) and one opened without a server', async () => {
    const s = await site()
    await roster(s.server)
    const { file } = await s.server.exportUsers({ passphrase: PASS, userIds: ['u1', 'u3'] })
    const fresh = await device(s, { noServer: true })
    // The site key alone does not vouch for a file: every device holds it.
    await expect(fresh.importUsers(file, { passphrase: PASS })).rejects.toMatchObject({
      code: 'AUTH_FAILED',
    })
    const wrong = (await site({ siteKey: SITE_KEY }, s.clock)).server.keyFingerprint
    await expect(
      fresh.importUsers(file, { passphrase: PASS, serverKeyFingerprint: wrong }),
    ).rejects.toMatchObject({
      code: 'AUTH_FAILED',
    })
    expect(fresh.replica.importedCount).toBe(0)
    // A forgery by anyone holding the site key (valid MAC, their own
    // signing key): refused against the real server's fingerprint.
    const impostor = await site({ siteKey: SITE_KEY }, s.clock)
    await impostor.server.users.put({ id: 'u1', name: 'Mallory', status: 'disabled' })
    const forged = (await impostor.server.exportUsers({ passphrase: PASS, userIds: ['u1'] })).file
    await expect(
      fresh.importUsers(forged, {
        passphrase: PASS,
        serverKeyFingerprint: s.server.keyFingerprint,
      }),
    ).rejects.toMatchObject({ code: 'AUTH_FAILED' })
    expect(fresh.users.list()).toEqual([])
    const fingerprint = { serverKeyFingerprint: s.server.keyFingerprint, passphrase: PASS }
    expect((await fresh.importUsers(file, fingerprint)).imported).toBe(2)
    // The fingerprint's key is now the device's server: another is refused.
    expect(fresh.replica.importedCount).toBe(2)
    await expect(
      fresh.importUsers(forged, {
        passphrase: PASS,
        serverKeyFingerprint: impostor.server.keyFingerprint,
      }),
    ).rejects.toMatchObject({ code: 'AUTH_FAILED' })
    expect(fresh.users.get('u3')).toEqual(s.server.users.get('u3'))
    // Pinned, a fingerprint given that is not its server's is refused (it
    // was ignored), its own is taken, and one that is no fingerprint is
    // INVALID_OPTIONS (it was AUTH_FAILED on a device never admitted).
    const notOurs = fresh.importUsers(file, { passphrase: PASS, serverKeyFingerprint: wrong })
    await expect(notOurs).rejects.toMatchObject({ code: 'AUTH_FAILED' })
    await expect(notOurs).rejects.toThrow(/not this device's server's/)
    expect((await fresh.importUsers(file, fingerprint)).imported).toBe(0)
    await expect(
      fresh.importUsers(file, { passphrase: PASS, serverKeyFingerprint: 'nonsense' }),
    ).rejects.toMatchObject({ code: 'INVALID_OPTIONS' })
    // Its first full sync replaces the import by the server's roster.
    const store = memoryStore()
    const later = await device(s, { id: 'D3', store })
    s.down()
    await settle()
    expect((await later.importUsers(file, fingerprint)).imported).toBe(2)
    s.up()
    await later.sync.full()
    expect(later.users.list()).toEqual(s.server.users.list())
    expect(later.replica.importedCount).toBe(0)
  })

  it('takes a fresh file on a device whose clock is hours behind (a flat RTC battery)', async () => {
    // A probe: past an hour behind, every fresh file was refused as holding
    // "a stamp in the future"; the server signed those stamps, and the file
    // its time.
    const s = await site()
    await roster(s.server)
    const { file } = await s.server.exportUsers({ passphrase: PASS, groupIds: ['lobby'] })
    const behind = new ManualClock(s.clock.now() - 2 * 60 * MINUTE)
    const d = await device(s, { noServer: true, clock: behind })
    const result = await d.importUsers(file, {
      passphrase: PASS,
      serverKeyFingerprint: s.server.keyFingerprint,
    })
    expect(result.imported).toBe(2)
    expect(d.users.get('u3')?.name).toBe('Cy Park')
    // A device write after it is stamped past the file's (the clock follows).
    await d.users.patch('u3', { email: 'cy@example.com' })
    expect(d.users.get('u3')?.email).toBe('cy@example.com')
  })

  it('names the user whose values the device refuses (a field it does not declare)', async () => {
    const s = await site({ customFields: { badge: 'string' } })
    await roster(s.server)
    await s.server.users.patch('u2', { badge: 'B-7' })
    const { file } = await s.server.exportUsers({ passphrase: PASS, groupIds: ['lab'] })
    const store = memoryStore()
    const d = await device(s, { noServer: true, store })
    const before = await dump(store)
    await expect(
      d.importUsers(file, { passphrase: PASS, serverKeyFingerprint: s.server.keyFingerprint }),
    ).rejects.toSatisfy(
      (e) => hasCode(e, 'INVALID_RECORD') && /user "u2": .*badge/.test((e as Error).message),
    )
    expect(await dump(store)).toEqual(before)
  })

  it('refuses a file while the device is connected to its server (SYNC_RUNNING)', async () => {
    const s = await site()
    await roster(s.server)
    const d = await device(s)
    await d.sync.full()
    const { file } = await s.server.exportUsers({ passphrase: PASS, userIds: ['u1'] })
    await expect(d.importUsers(file, { passphrase: PASS })).rejects.toMatchObject({
      code: 'SYNC_RUNNING',
    })
  })

  it('refuses expired, foreign, corrupt, truncated and oversized files, changing nothing', async () => {
    const s = await site()
    await roster(s.server)
    const store = memoryStore()
    const d = await device(s, { store })
    await d.sync.full()
    s.down()
    await settle()
    const { file } = await s.server.exportUsers({ passphrase: PASS, userIds: ['u1', 'u2'] })
    const other = await site({ siteKey: 'another-site-key' }, s.clock)
    await other.server.users.put({ id: 'u9', name: 'Mallory' })
    const foreign = (await other.server.exportUsers({ passphrase: PASS, userIds: ['u9'] })).file
    // Same site key, another server (key): refused by the pinned key.
    const impostor = await site({ siteKey: SITE_KEY }, s.clock)
    await impostor.server.users.put({ id: 'u9', name: 'Mallory' })
    const forged = (await impostor.server.exportUsers({ passphrase: PASS, userIds: ['u9'] })).file
    const corrupt = Uint8Array.from(file)
    const middle = Math.floor(file.byteLength / 2)
    corrupt[middle] = (corrupt[middle] ?? 0) ^ 0x01
    const before = await dump(store)
    const viewsBefore = d.users.list()
    const code = async (bytes: unknown): Promise<string> => {
      try {
        await d.importUsers(bytes as Uint8Array, { passphrase: PASS })
        return 'imported'
      } catch (error) {
        return (error as { code: string }).code
      }
    }
    expect(await code(foreign)).toBe('AUTH_FAILED')
    // Another site's, or damaged where only the MAC covers it: the message
    // says both (a probe was told "another site" of a file with one bit flipped).
    await expect(d.importUsers(foreign, { passphrase: PASS })).rejects.toThrow(
      /another site.*, or it is damaged/,
    )
    expect(await code(forged)).toBe('AUTH_FAILED')
    expect(await code(corrupt)).toBe('MALFORMED_MESSAGE')
    expect(await code(file.subarray(0, file.byteLength - 10))).toBe('MALFORMED_MESSAGE')
    expect(await code(file.subarray(0, 5))).toBe('MALFORMED_MESSAGE')
    expect(await code(new Uint8Array(0))).toBe('MALFORMED_MESSAGE')
    expect(await code(Buffer.from('{"users":[]}'))).toBe('MALFORMED_MESSAGE')
    expect(await code('not bytes')).toBe('MALFORMED_MESSAGE')
    expect(await code(new Uint8Array(limits.exportFileBytesMax + 1))).toBe('MESSAGE_TOO_LARGE')
    await s.clock.advance(15 * MINUTE)
    expect(await code(file)).toBe('EXPORT_EXPIRED')
    // The device was used (retention's clock), nothing else; its link,
    // retrying a server that is down, may have logged the outage.
    const after = await dump(store)
    after.delete('r/sync/state')
    before.delete('r/sync/state')
    for (const [key, value] of after)
      if (!before.has(key) && key.startsWith('e/') && value.includes(hex('sync-failed')))
        after.delete(key)
    expect(after).toEqual(before)
    expect(d.users.list()).toEqual(viewsBefore)
    expect(hasCode(new SyncError('SYNC_FAILED', 'x'), 'SYNC_FAILED')).toBe(true)
  })

  it('refuses a file on a device with no site key and no pinned server key', async () => {
    const s = await site()
    await roster(s.server)
    const { file } = await s.server.exportUsers({ passphrase: PASS, userIds: ['u1'] })
    const d = await createDevice({ id: 'D9', store: memoryStore(), clock: s.clock })
    closers.push(() => d.close())
    await expect(d.importUsers(file, { passphrase: PASS })).rejects.toMatchObject({
      code: 'AUTH_FAILED',
    })
    expect(d.users.list()).toEqual([])
  })

  it('survives a restart and is cleared by a retention wipe', async () => {
    const s = await site()
    await roster(s.server)
    const { file } = await s.server.exportUsers({ passphrase: PASS, userIds: ['u1'] })
    const store = new KeptOpenStore(memoryStore())
    closers.push(() => store.inner.close())
    const d = await device(s, { noServer: true, store, retentionMs: 10 * MINUTE })
    await d.importUsers(file, { passphrase: PASS, serverKeyFingerprint: s.server.keyFingerprint })
    await d.close()
    closers.pop()
    const again = await device(s, { noServer: true, store, retentionMs: 10 * MINUTE })
    expect(again.users.get('u1')?.name).toBe('Ann Lee')
    await s.clock.advance(11 * MINUTE)
    await settle()
    expect(again.users.list()).toEqual([])
    expect(again.replica.importedCount).toBe(0)
  })
})

describe('the public contract (API.md): exportUsers({ userIds }), then importUsers(file)', () => {
  it('imports on an admitted device of the site, no passphrase asked', async () => {
    const s = await site()
    await roster(s.server)
    const d = await device(s)
    await d.sync.full()
    s.down()
    await settle()
    await s.server.users.patch('u1', { name: 'Ann L.' })
    const { file, expiresAt } = await s.server.exportUsers({ userIds: ['u1'] })
    expect(file).toBeInstanceOf(Uint8Array)
    expect(expiresAt).toBe(s.clock.now() + 15 * MINUTE)
    expect(await d.importUsers(file)).toMatchObject({ imported: 1, unchanged: 0, expiresAt })
    expect(d.users.get('u1')?.name).toBe('Ann L.')
    expect(d.users.get('u1')).toEqual(s.server.users.get('u1'))
  })

  it("imports on a device given the server key's fingerprint, the server's options left at their defaults", async () => {
    // No exportKdfLogN: the server's default scrypt cost, as outside code gets it.
    const server = await createServer({ store: memoryStore(), listen: false, siteKey: SITE_KEY })
    closers.push(() => server.close())
    await roster(server)
    const { file } = await server.exportUsers({ userIds: ['u1', 'u3'] })
    const d = await createDevice({
      id: 'D2',
      store: memoryStore(),
      ...(server.siteKey === undefined ? {} : { siteKey: server.siteKey }),
      serverKeyFingerprint: server.keyFingerprint,
    })
    closers.push(() => d.close())
    expect(await d.importUsers(file)).toMatchObject({ imported: 2, unchanged: 0 })
    expect(d.users.list().map((u) => u.id)).toEqual(['u1', 'u3'])
    expect(d.users.get('u3')).toEqual(server.users.get('u3'))
    // The options object form: the fingerprint given to importUsers instead.
    const e = await createDevice({ id: 'D3', store: memoryStore(), siteKey: SITE_KEY })
    closers.push(() => e.close())
    const fingerprint = { serverKeyFingerprint: server.keyFingerprint }
    expect(await e.importUsers(file, fingerprint)).toMatchObject({ imported: 2 })
    expect(e.users.get('u1')).toEqual(server.users.get('u1'))
  })
})

/**
 * Neither the PIN's hash (found from it in microseconds: 4 to 12 digits),
 * nor its salt, nor a card number or a name is in the bytes.
 */
function expectNoSecrets(file: Uint8Array, storedPin: string): void {
  const bytes = Buffer.from(file)
  // The salt and the digest are the last two parts of either format.
  const [salt = '', digest = ''] = storedPin.split('$').slice(-2)
  for (const secret of [
    Buffer.from(digest, 'hex'),
    Buffer.from(salt, 'hex'),
    Buffer.from(digest),
    Buffer.from('CAFE0042'),
    Buffer.from('04A1B2C3'),
    Buffer.from('Pia Quist'),
    // Long enough not to turn up in the ciphertext by chance: the id was
    // 'u7', two bytes, found in a random kilobyte about one run in thirty.
    Buffer.from('pia-quist-7'),
  ])
    expect(bytes.includes(secret), secret.toString()).toBe(false)
}

/** The error code an import rejects with, or 'imported'. */
async function importCode(
  d: DevicePeer,
  file: Uint8Array,
  options: { passphrase?: string; serverKeyFingerprint?: string } = {},
): Promise<string> {
  try {
    await d.importUsers(file, options)
    return 'imported'
  } catch (error) {
    return (error as { code: string }).code
  }
}

describe('export encryption', () => {
  it('keeps names, cards and PIN hashes out of the file: only the passphrase opens it', async () => {
    const s = await site()
    await roster(s.server)
    await s.server.users.put({
      id: 'pia-quist-7',
      name: 'Pia Quist',
      pin: '4711',
      cards: [{ type: 'csn', value: 'CAFE0042' }],
    })
    const pinOf = (peer: ServerPeer | DevicePeer): string => {
      const pin = peer.replica.replicaOf(asUserId('pia-quist-7')).server?.f?.pin
      return typeof pin === 'string' ? pin : ''
    }
    const stored = pinOf(s.server)
    // Peppered with the site key (peers/pin.ts): the file's copy is worth
    // nothing offline without it.
    expect(stored).toMatch(/^scrypt\$ln=12,r=8,p=1,k=[0-9a-f]{8}\$/)
    const { file, passphrase } = await s.server.exportUsers({
      userIds: ['pia-quist-7', 'u3'],
      passphrase: PASS,
    })
    expect(passphrase).toBeUndefined()
    expectNoSecrets(file, stored)
    const d = await device(s, { noServer: true, serverKeyFingerprint: s.server.keyFingerprint })
    const code = async (options: { passphrase?: string }, bytes = file): Promise<string> => {
      try {
        await d.importUsers(bytes, options)
        return 'imported'
      } catch (error) {
        return (error as { code: string }).code
      }
    }
    expect(await code({})).toBe('EXPORT_PASSPHRASE_INVALID')
    expect(await code({ passphrase: 'correct horse battery stapler' })).toBe(
      'EXPORT_PASSPHRASE_INVALID',
    )
    // A file of the unencrypted format 2 (or any other) is refused by its version.
    const v2 = Uint8Array.from(file)
    v2[8] = 2
    expect(await code({ passphrase: PASS }, v2)).toBe('EXPORT_FORMAT_UNSUPPORTED')
    // The scrypt parameters are signed: lowering the cost breaks the file.
    const cheap = Uint8Array.from(file)
    cheap[8 + 1 + 32 + 1] = 10
    expect(await code({ passphrase: PASS }, cheap)).toBe('MALFORMED_MESSAGE')
    expect(d.users.list()).toEqual([])
    expect(d.replica.importedCount).toBe(0)
    // The same passphrase in another Unicode form opens it (NFC), and the
    // imported PIN hash is the server's: the device checks the PIN as before.
    expect(await code({ passphrase: PASS.normalize('NFD') })).toBe('imported')
    expect(d.users.get('pia-quist-7')).toEqual(s.server.users.get('pia-quist-7'))
    expect(verifyPin('4711', pinOf(d), SITE_KEY)).toBe(true)
    expect(verifyPin('4712', pinOf(d), SITE_KEY)).toBe(false)
    expect(() => verifyPin('4711', pinOf(d))).toThrow(/site key/)
  })

  it('encrypts under the site key by default: the device opens it with its own site key', async () => {
    const s = await site()
    await roster(s.server)
    await s.server.users.put({
      id: 'pia-quist-7',
      name: 'Pia Quist',
      pin: '4711',
      cards: [{ type: 'csn', value: 'CAFE0042' }],
    })
    const stored = s.server.replica.replicaOf(asUserId('pia-quist-7')).server?.f?.pin
    const prepared = await s.server.exportUsers({ userIds: ['pia-quist-7', 'u3'] })
    expect(prepared.keySource).toBe('site-key')
    expect(prepared.passphrase).toBeUndefined()
    // The key source is in the signed header: 2 = the site key, whose key
    // is HKDF of the site key with the file's salt: no scrypt parameters,
    // so the file is the passphrase file's length less those three bytes.
    expect(prepared.file[8 + 1 + 32]).toBe(2)
    const locked = await s.server.exportUsers({ userIds: ['pia-quist-7', 'u3'], passphrase: PASS })
    expect(locked.file[8 + 1 + 32]).toBe(1)
    expect(locked.file[8 + 1 + 32 + 1]).toBe(limits.exportKdfLogNMin)
    expect(locked.file.byteLength - prepared.file.byteLength).toBe(3)
    expectNoSecrets(prepared.file, typeof stored === 'string' ? stored : '')
    const fingerprint = { serverKeyFingerprint: s.server.keyFingerprint }
    // No site key on the device: a typed error naming what is missing.
    const bare = await createDevice({ id: 'D7', store: memoryStore(), clock: s.clock })
    closers.push(() => bare.close())
    expect(await importCode(bare, prepared.file, fingerprint)).toBe('EXPORT_SITE_KEY_REQUIRED')
    await expect(bare.importUsers(prepared.file, fingerprint)).rejects.toThrow(/site key/)
    // Another site's key: the MAC says so before any scrypt (AUTH_FAILED).
    const other = await device(s, { id: 'D8', noServer: true, siteKey: 'another-site-key' })
    expect(await importCode(other, prepared.file, fingerprint)).toBe('AUTH_FAILED')
    // A site-key file without its MAC is corrupt (it would cost scrypt to find out).
    const stripped = Uint8Array.from(prepared.file.subarray(0, prepared.file.byteLength - 33))
    const bareMac = Buffer.concat([stripped, Buffer.from([0])])
    expect(prepared.file[prepared.file.byteLength - 33]).toBe(32)
    const d = await device(s, { noServer: true, ...fingerprint })
    expect(await importCode(d, bareMac)).toBe('MALFORMED_MESSAGE')
    for (const peer of [bare, other, d]) expect(peer.users.list()).toEqual([])
    // A passphrase given for a site-key file is not needed, and not in the way.
    expect(await importCode(d, prepared.file, { passphrase: PASS })).toBe('imported')
    expect(d.users.get('pia-quist-7')).toEqual(s.server.users.get('pia-quist-7'))
    const pin = d.replica.replicaOf(asUserId('pia-quist-7')).server?.f?.pin
    expect(verifyPin('4711', typeof pin === 'string' ? pin : '', SITE_KEY)).toBe(true)
  })

  it('generates a passphrase only when asked, and refuses a weak one before any work', async () => {
    const s = await site()
    await roster(s.server)
    const prepared = await s.server.exportUsers({ userIds: ['u1'], generatePassphrase: true })
    expect(prepared.keySource).toBe('passphrase')
    expect(prepared.passphrase).toMatch(/^[0-9A-Z]{4}(-[0-9A-Z]{4}){5}$/)
    const again = await s.server.exportUsers({ userIds: ['u1'], generatePassphrase: true })
    expect(again.passphrase).not.toBe(prepared.passphrase)
    // Six emoji are 12 UTF-16 units but 6 characters; 12 spaces are no secret.
    for (const passphrase of [
      '',
      'short',
      '😀'.repeat(6),
      ' '.repeat(12),
      'x'.repeat(limits.exportPassphraseCharsMax + 1),
      42,
    ])
      await expect(
        s.server.exportUsers({ userIds: ['u1'], passphrase } as { userIds: string[] }),
      ).rejects.toMatchObject({ code: 'EXPORT_PASSPHRASE_INVALID' })
    await expect(
      s.server.exportUsers({ userIds: ['u1'], passphrase: PASS, generatePassphrase: true }),
    ).rejects.toMatchObject({ code: 'INVALID_OPTIONS' })
    expect(s.server.events.query({ type: 'users-exported' })).toHaveLength(2)
    const d = await device(s, { noServer: true, serverKeyFingerprint: s.server.keyFingerprint })
    // A passphrase file needs its passphrase, site key or not.
    expect(await importCode(d, prepared.file)).toBe('EXPORT_PASSPHRASE_INVALID')
    expect(
      await d.importUsers(prepared.file, { passphrase: prepared.passphrase ?? '' }),
    ).toMatchObject({ imported: 1 })
    // Crockford's base 32 reads either case alike: typed in lower case, a
    // generated passphrase opens its file too (one chosen by the operator
    // stays case-sensitive).
    expect(
      await importCode(d, again.file, { passphrase: (again.passphrase ?? '').toLowerCase() }),
    ).toBe('imported')
    const chosen = await s.server.exportUsers({ userIds: ['u1'], passphrase: 'Correct-Horse-1' })
    expect(await importCode(d, chosen.file, { passphrase: 'correct-horse-1' })).toBe(
      'EXPORT_PASSPHRASE_INVALID',
    )
  })

  it('on an open site, a file without a passphrase imports without one (and is not confidential)', async () => {
    const clock = new ManualClock()
    const server = await createServer({
      store: memoryStore(),
      clock,
      listen: false,
      open: true,
      exportKdfLogN: limits.exportKdfLogNMin,
    })
    closers.push(() => server.close())
    await roster(server)
    const prepared = await server.exportUsers({ userIds: ['u1', 'u3'] })
    expect(prepared.keySource).toBe('none')
    // Key source 3 = none: no scrypt parameters, and no site MAC (empty).
    expect(prepared.file[8 + 1 + 32]).toBe(3)
    expect(prepared.file[prepared.file.byteLength - 1]).toBe(0)
    const d = await createDevice({
      id: 'D6',
      store: memoryStore(),
      clock,
      serverKeyFingerprint: server.keyFingerprint,
    })
    closers.push(() => d.close())
    expect(await d.importUsers(prepared.file)).toMatchObject({ imported: 2 })
    expect(d.users.get('u3')).toEqual(server.users.get('u3'))
    // A passphrase still protects an open site's file.
    const locked = await server.exportUsers({ userIds: ['u2'], passphrase: PASS })
    expect(locked.keySource).toBe('passphrase')
    expect(await importCode(d, locked.file)).toBe('EXPORT_PASSPHRASE_INVALID')
    expect(await importCode(d, locked.file, { passphrase: PASS })).toBe('imported')
    expect(d.users.get('u2')).toEqual(server.users.get('u2'))
  })
})

describe('POST /api/exports', () => {
  it('answers the file to the admin token, typed errors otherwise', async () => {
    const server = await createServer({ store: memoryStore(), siteKey: SITE_KEY, port: 0 })
    closers.push(() => server.close())
    await roster(server)
    const post = (body: string, token = server.adminToken, method = 'POST'): Promise<Response> =>
      fetch(`${server.http}/api/exports`, {
        method,
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        ...(method === 'GET' ? {} : { body }),
      })
    const ok = await post(JSON.stringify({ groupIds: ['lab'] }))
    expect(ok.status).toBe(200)
    expect(ok.headers.get('content-type')).toBe('application/octet-stream')
    expect(ok.headers.get('x-rostersync-users')).toBe('2')
    expect(Number(ok.headers.get('x-rostersync-expires-at'))).toBeGreaterThan(Date.now())
    // No passphrase given: encrypted under the site key, none generated.
    expect(ok.headers.get('x-rostersync-key-source')).toBe('site-key')
    expect(ok.headers.get('x-rostersync-passphrase')).toBeNull()
    expect(ok.headers.get('cache-control')).toBe('no-store')
    const file = new Uint8Array(await ok.arrayBuffer())
    expect(file[8]).toBe(3)
    expect(file[8 + 1 + 32]).toBe(2)
    // A passphrase file gets the server's default scrypt cost: N = 2^17
    // (the byte after the magic, the version, the server's key and the
    // key source).
    const locked = await post(JSON.stringify({ groupIds: ['lab'], passphrase: PASS }))
    expect(locked.headers.get('x-rostersync-key-source')).toBe('passphrase')
    const lockedFile = new Uint8Array(await locked.arrayBuffer())
    expect(lockedFile[8 + 1 + 32 + 1]).toBe(limits.exportKdfLogN)
    expect(limits.exportKdfLogN).toBe(17)
    const d = await createDevice({
      id: 'D5',
      store: memoryStore(),
      siteKey: SITE_KEY,
      serverKeyFingerprint: server.keyFingerprint,
    })
    closers.push(() => d.close())
    expect(await d.importUsers(file)).toMatchObject({ imported: 2 })
    expect(d.users.get('u2')).toEqual(server.users.get('u2'))
    const codeOf = async (res: Response): Promise<[number, string]> => [
      res.status,
      ((await res.json()) as { error: { code: string } }).error.code,
    ]
    expect(await codeOf(await post('{"userIds":["u1"]}', 'wrong-token-0123456789'))).toEqual([
      401,
      'AUTH_FAILED',
    ])
    expect(await codeOf(await post('not json'))).toEqual([400, 'MALFORMED_MESSAGE'])
    expect(await codeOf(await post('{}'))).toEqual([400, 'INVALID_OPTIONS'])
    // A passphrase given is the file's, not echoed back; a short one is refused.
    const chosen = await post(JSON.stringify({ userIds: ['u1'], passphrase: PASS }))
    expect(chosen.status).toBe(200)
    expect(chosen.headers.get('x-rostersync-passphrase')).toBeNull()
    expect(chosen.headers.get('x-rostersync-key-source')).toBe('passphrase')
    // Asked for: the server generates one (120 bits), told once.
    const asked = await post(JSON.stringify({ userIds: ['u1'], generatePassphrase: true }))
    expect(asked.status).toBe(200)
    expect(asked.headers.get('x-rostersync-passphrase')).toMatch(/^[0-9A-Z]{4}(-[0-9A-Z]{4}){5}$/)
    expect(await codeOf(await post('{"userIds":["u1"],"generatePassphrase":"yes"}'))).toEqual([
      400,
      'INVALID_OPTIONS',
    ])
    expect(await codeOf(await post('{"userIds":["u1"],"passphrase":"123456"}'))).toEqual([
      400,
      'EXPORT_PASSPHRASE_INVALID',
    ])
    expect(await codeOf(await post('{"userIds":["nobody"]}'))).toEqual([404, 'USER_NOT_FOUND'])
    // A group no user is in is a typo, not a file of nobody.
    expect(await codeOf(await post('{"groupIds":["no-such-group"]}'))).toEqual([
      404,
      'GROUP_NOT_FOUND',
    ])
    const many = JSON.stringify({ groupIds: Array.from({ length: 51 }, (_, i) => `g${i}`) })
    expect(await codeOf(await post(many))).toEqual([400, 'EXPORT_TOO_LARGE'])
    expect((await post('', server.adminToken, 'GET')).status).toBe(405)
  })
})

/**
 * What any holder of the site key (every device of the site) can do to a
 * site-key export file: open its body, change it, and seal it again under
 * the same key, nonce and header, with a fresh site MAC. Only the server's
 * signature is beyond it. PROTOCOL.md, "Export file".
 */
function resealSiteKeyFile(
  file: Uint8Array,
  siteKey: string,
  edit: (body: Record<string, unknown>) => Record<string, unknown>,
): Uint8Array {
  const DOMAIN = 'rostersync/export/3'
  const d = decoding.createDecoder(file)
  decoding.readUint8Array(d, 8) // magic
  decoding.readVarUint(d) // version
  decoding.readUint8Array(d, 32) // server key
  expect(decoding.readVarUint(d)).toBe(2) // key source: the site key
  const salt = decoding.readUint8Array(d, 16)
  const nonce = decoding.readUint8Array(d, 12)
  const header = file.subarray(0, d.pos)
  const ciphertext = decoding.readVarUint8Array(d)
  const signature = decoding.readVarUint8Array(d)
  const key = Buffer.from(hkdfSync('sha256', siteKey, salt, `${DOMAIN}/site-key`, 32))
  const aad = Buffer.concat([Buffer.from(`${DOMAIN}\u0000`), header])
  const decipher = createDecipheriv('aes-256-gcm', key, nonce)
  decipher.setAAD(aad)
  decipher.setAuthTag(ciphertext.subarray(ciphertext.byteLength - 16))
  const body = Buffer.concat([
    decipher.update(ciphertext.subarray(0, ciphertext.byteLength - 16)),
    decipher.final(),
  ])
  const edited = encodeValue(edit(decodeValue(body) as Record<string, unknown>))
  const cipher = createCipheriv('aes-256-gcm', key, nonce)
  cipher.setAAD(aad)
  const sealed = Buffer.concat([cipher.update(edited), cipher.final(), cipher.getAuthTag()])
  const message = Buffer.concat([Buffer.from(`${DOMAIN}\u0000`), header, sealed])
  const mac = createHmac('sha256', Buffer.from(hkdfSync('sha256', siteKey, '', DOMAIN, 32)))
    .update(message)
    .digest()
  const e = encoding.createEncoder()
  encoding.writeUint8Array(e, header)
  encoding.writeVarUint8Array(e, sealed)
  encoding.writeVarUint8Array(e, signature)
  encoding.writeVarUint8Array(e, mac)
  return encoding.toUint8Array(e)
}

describe("an export file's expiry", () => {
  it('is inside the signed, encrypted body: a site-key holder who extends it gets MALFORMED_MESSAGE, nothing imported', async () => {
    const s = await site()
    await roster(s.server)
    const d = await device(s, { noServer: true, serverKeyFingerprint: s.server.keyFingerprint })
    const { file, expiresAt } = await s.server.exportUsers({ userIds: ['u1'] })
    // The expiry is nowhere in the clear: the header is magic, version,
    // server key, key source, salt and nonce (8 + 1 + 32 + 1 + 16 + 12).
    let seen: unknown
    const same = resealSiteKeyFile(file, SITE_KEY, (body) => {
      seen = body.expiresAt
      return body
    })
    expect(seen).toBe(expiresAt)
    // Resealed unchanged, the file is the same file.
    expect(Buffer.from(same).equals(Buffer.from(file))).toBe(true)
    await s.clock.advance(15 * MINUTE)
    expect(await importCode(d, file)).toBe('EXPORT_EXPIRED')
    const extended = resealSiteKeyFile(file, SITE_KEY, (body) => ({
      ...body,
      createdAt: (body.createdAt as number) + 60 * MINUTE,
      expiresAt: (body.expiresAt as number) + 60 * MINUTE,
    }))
    expect(await importCode(d, extended)).toBe('MALFORMED_MESSAGE')
    await expect(d.importUsers(extended)).rejects.toThrow(/signature does not verify/)
    expect(d.users.list()).toEqual([])
    expect(d.replica.importedCount).toBe(0)
  })
})

/** `text` as the hex of its UTF-8 bytes (how dump() shows stored values). */
function hex(text: string): string {
  return Buffer.from(text).toString('hex')
}
