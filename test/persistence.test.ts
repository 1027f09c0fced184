/**
 * What a peer keeps across restarts: views, events and local-only state on a
 * real LevelDB in a temp dir; compaction; the Yjs clientID rule (kept after
 * a clean close, fresh after a crash); storage failures; the bounded,
 * queryable event log.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as Y from 'yjs'
import { deriveClientId, keyPairFromSeed } from '../core/signing.js'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { Clock } from '../core/clock.js'
import { hasCode } from '../core/errors.js'
import { asUserId } from '../core/ids.js'
import { limits } from '../core/limits.js'
import type { RangeOptions, Store, StoreOp } from '../core/store.js'
import { createDevice, type DevicePeer } from '../peers/create-device.js'
import { link } from '../peers/memory-link.js'
import { keys } from '../peers/storage-keys.js'
import type { UpdateLog } from '../peers/replica/update-log.js'
import { createServer, type ServerPeer } from '../server-peer/create-server.js'
import { FaultyStore } from '../storage/faulty-store.js'
import { memoryStore, openLevelStore } from '../storage/level-store.js'
import { ManualClock } from './helpers/manual-clock.js'
import { KeptOpenStore } from './helpers/forwarding-store.js'

/** A clock that only moves when the test says so (no timer is ever due). */
function fakeClock(startMs = Date.UTC(2024, 5, 1)): Clock & { advance(ms: number): void } {
  let now = startMs
  return {
    now: () => now,
    setTimeout: () => undefined,
    clearTimeout: () => undefined,
    advance: (ms) => {
      now += ms
    },
  }
}

/**
 * A store whose `close` does nothing, over one that stays open: lets a test
 * abandon a peer without closing it (a crash, as far as the store can tell)
 * and open the next peer on the same data.
 */
class SharedStore extends KeptOpenStore {}

async function keysIn(store: Store, gte: string, lt: string): Promise<string[]> {
  const found: string[] = []
  for await (const [key] of store.range({ gte, lt })) found.push(key)
  return found
}

/** Everything replicated, as plain data: every root map of the document. */
function docContent(peer: ServerPeer | DevicePeer): Record<string, unknown> {
  const content: Record<string, unknown> = {}
  for (const name of [...peer.replica.doc.share.keys()].sort()) {
    content[name] = peer.replica.doc.getMap(name).toJSON()
  }
  return content
}

/** The state a restart must preserve. */
function state(peer: ServerPeer | DevicePeer): unknown {
  return {
    list: peer.users.list(),
    events: peer.events.query(),
    doc: docContent(peer),
    vector: Y.decodeStateVector(Y.encodeStateVector(peer.replica.doc)),
    hlc: peer.replica.hlcPeek(),
  }
}

let dirs: string[] = []
async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'rostersync-persist-'))
  dirs.push(dir)
  return dir
}
afterEach(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true })
  dirs = []
})

describe('reopen', () => {
  it('restores the same views, events and local state (device deletes, device-specific fields)', async () => {
    const clock = fakeClock()
    const serverDir = await tempDir()
    const deviceDir = await tempDir()
    let server = await createServer({
      dataDir: serverDir,
      clock,
      fieldPolicies: { title: 'device-specific' },
    })
    let device = await createDevice({ id: 'dev-a', dataDir: deviceDir, clock })
    let l = link(server.replica, device.replica)
    await server.users.put({ id: 'u1', name: 'One', title: 'Server-only title' })
    await server.users.put({ id: 'u2', name: 'Two' })
    await server.users.put({ id: 'u3', name: 'Three', email: 'three@example.com' })
    await l.settled()
    clock.advance(1_000)
    await device.users.patch('u1', { title: 'Door 7', phone: '+1 1' })
    await device.users.delete('u2')
    await device.users.put({ id: 'u4', name: 'Four', title: 'Gate' })
    await device.users.patch('u3', { email: 'overridden@example.com' })
    await l.settled()
    l.close()

    const deviceBefore = state(device)
    const serverBefore = state(server)
    const clientIds = [server.replica.clientId, device.replica.clientId]
    expect(device.users.list().map((u) => [u.id, u.title])).toEqual([
      ['u1', 'Door 7'],
      ['u3', undefined],
      ['u4', 'Gate'],
    ])
    expect(server.users.get('u1')?.title).toBe('Server-only title')
    await device.close()
    await server.close()

    clock.advance(1_000)
    server = await createServer({ dataDir: serverDir, clock })
    device = await createDevice({ id: 'dev-a', dataDir: deviceDir, clock })
    expect(state(device)).toEqual(deviceBefore)
    expect(state(server)).toEqual(serverBefore)
    expect([server.replica.openKind, device.replica.openKind]).toEqual(['clean', 'clean'])
    // A device keeps its clientID across a clean restart; the server takes
    // a fresh one at every start (PROTOCOL.md, "A restored server").
    expect(device.replica.clientId).toBe(clientIds[1])
    expect(server.replica.clientId).not.toBe(clientIds[0])
    expect(device.users.get('u2')).toBeUndefined()
    expect(device.events.query({ type: 'user-deleted-locally' }).map((e) => e.userId)).toEqual([
      'u2',
    ])
    expect(device.events.query({ type: 'edit-overridden-by-server' }).map((e) => e.userId)).toEqual(
      ['u3'],
    )

    // The restored delete mark still compares against the server's stamp: a
    // server change to u2 shows it again, as it would have before the restart.
    l = link(server.replica, device.replica)
    await l.settled()
    expect(device.users.get('u2')).toBeUndefined()
    await server.users.patch('u2', { department: 'Ops' })
    await l.settled()
    expect(device.users.get('u2')).toEqual({ id: 'u2', name: 'Two', department: 'Ops' })
    l.close()
    await device.close()
    await server.close()
  })

  it('a brand-new peer opens as new, then clean with the same clientID after each clean close', async () => {
    const dir = await tempDir()
    const seen: Array<[string, number]> = []
    for (let round = 0; round < 3; round++) {
      const device = await createDevice({ id: 'dev-a', dataDir: dir })
      seen.push([device.replica.openKind, device.replica.clientId])
      await device.users.put({ id: `u${round}`, name: `Round ${round}` })
      await device.close()
    }
    const first = seen[0]?.[1]
    expect(seen).toEqual([
      ['new', first],
      ['clean', first],
      ['clean', first],
    ])
  })
})

describe('compaction', () => {
  it('replica.compact() folds the log into a snapshot; reopen gives the same state', async () => {
    const dir = await tempDir()
    const clock = fakeClock()
    let store = await openLevelStore(dir)
    let server = await createServer({ store, clock })
    for (let i = 0; i < 20; i++) {
      clock.advance(10)
      await server.users.put({ id: `u${i}`, name: `User ${i}`, groups: [`g${i % 3}`] })
    }
    await server.users.delete('u5')
    await server.users.patch('u6', { email: null, phone: '+7' })
    expect((await keysIn(store, keys.updatesFrom, keys.updatesTo)).length).toBe(22)

    await server.replica.compact()
    expect(await keysIn(store, keys.updatesFrom, keys.updatesTo)).toEqual([])
    expect(await store.get(keys.snapshot)).toBeInstanceOf(Uint8Array)
    // Writes after the compaction append to the log again, numbered after it.
    await server.users.put({ id: 'u99', name: 'After compaction' })
    expect(await keysIn(store, keys.updatesFrom, keys.updatesTo)).toEqual([keys.update(23)])
    const before = state(server)

    // A crash (no clean close) after compaction: the snapshot plus the log
    // tail must rebuild the same document.
    const crashed = new SharedStore(await openLevelStore(await tempDir()))
    for await (const [key, value] of store.range({ gte: '', lt: '\uffff' })) {
      await crashed.put(key, value)
    }
    const fromCrash = await createServer({ store: crashed, clock })
    expect(fromCrash.replica.openKind).toBe('crash')
    expect(state(fromCrash)).toEqual(before)
    await crashed.inner.close()

    await server.close()
    store = await openLevelStore(dir)
    server = await createServer({ store, clock })
    expect(state(server)).toEqual(before)
    expect(server.users.get('u5')).toBeUndefined()
    expect(server.users.get('u6')).toEqual({
      id: 'u6',
      name: 'User 6',
      phone: '+7',
      groups: ['g0'],
    })
    await server.close()
  })

  it('close() leaves the log as it is (no whole-document encode); reopen gives the same state', async () => {
    const dir = await tempDir()
    const clock = fakeClock()
    let store = await openLevelStore(dir)
    let server = await createServer({ store, clock })
    for (let i = 0; i < 30; i++) {
      clock.advance(10)
      await server.users.put({ id: `u${i}`, name: `User ${i}` })
    }
    await server.users.delete('u3')
    await server.users.patch('u4', { name: 'Renamed' })
    const before = state(server)
    const logged = await keysIn(store, keys.updatesFrom, keys.updatesTo)
    expect(logged).toHaveLength(32)
    await server.close()
    // Issue 13: closing a 1M-user server encoded the whole roster into a
    // snapshot (7 to 48 s); every write is durable in the log already.
    store = await openLevelStore(dir)
    expect(await store.get(keys.snapshot)).toBeUndefined()
    expect(await keysIn(store, keys.updatesFrom, keys.updatesTo)).toEqual(logged)
    server = await createServer({ store, clock })
    expect(server.replica.openKind).toBe('clean')
    expect(state(server)).toEqual(before)
    expect(server.users.get('u4')?.name).toBe('Renamed')
    // Writes go on, numbered after the log.
    await server.users.put({ id: 'u99', name: 'After' })
    expect((await keysIn(store, keys.updatesFrom, keys.updatesTo)).at(-1)).toBe(keys.update(33))
    await server.close()
  })

  it('compacts after updatesBeforeCompactionMax updates once writes pause; reopen gives the same state', async () => {
    const dir = await tempDir()
    const clock = new ManualClock()
    let store = await openLevelStore(dir)
    let device = await createDevice({ id: 'dev-a', store, clock })
    const writes = limits.updatesBeforeCompactionMax + 5
    for (let i = 0; i < writes; i++) {
      // Awaited one by one: each write is its own batch and its own update.
      await device.users.put({ id: `u${i % 50}`, name: `Name ${i}` })
      if (i % 100 === 0) await clock.advance(limits.compactionIdleMs / 10)
    }
    // Due, but writes keep coming (less than compactionIdleMs apart): not yet.
    expect(await keysIn(store, keys.updatesFrom, keys.updatesTo)).toHaveLength(writes)
    expect(await store.get(keys.snapshot)).toBeUndefined()
    await clock.advance(limits.compactionIdleMs)
    await device.replica.drain() // the compaction holds the queue while it runs
    const logged = await keysIn(store, keys.updatesFrom, keys.updatesTo)
    expect(logged.length).toBe(0)
    expect(await store.get(keys.snapshot)).toBeInstanceOf(Uint8Array)
    expect(device.users.list()).toHaveLength(50)
    expect(device.users.get('u49')?.name).toBe(`Name ${writes - 6}`)
    const before = state(device)
    await device.close()

    store = await openLevelStore(dir)
    device = await createDevice({ id: 'dev-a', store, clock })
    expect(state(device)).toEqual(before)
    await device.close()
  })

  it('tells the log which batches deleted nothing: a bulk enrolment adds no garbage (issue 13)', async () => {
    const store = memoryStore()
    const server = await createServer({ store, clock: new ManualClock(), listen: false })
    // The update log is internal to the replica: read, never changed, here.
    const log = Reflect.get(server.replica, 'log') as UpdateLog
    const bytesAtOpen = log.bytes
    const deletingAtOpen = log.deletingBytes
    await Promise.all(
      Array.from({ length: 50 }, (_, i) => server.users.put({ id: `u${i}`, name: `User ${i}` })),
    )
    await server.users.put({ id: 'u50', name: 'One more' })
    expect(log.bytes).toBeGreaterThan(bytesAtOpen)
    expect(log.deletingBytes).toBe(deletingAtOpen)
    // An overwrite and a delete make garbage: their bytes count.
    const beforePatch = log.bytes
    await server.users.patch('u1', { name: 'Renamed' })
    expect(log.deletingBytes - deletingAtOpen).toBe(log.bytes - beforePatch)
    const beforeDelete = log.deletingBytes
    await server.users.delete('u2')
    expect(log.deletingBytes).toBeGreaterThan(beforeDelete)
    await server.close()
  })

  it('counts received updates that delete nothing as adding no garbage: a full sync does not make a fresh device compact (issue 13)', async () => {
    const server = await createServer({
      store: memoryStore(),
      clock: new ManualClock(),
      listen: false,
    })
    await Promise.all(
      Array.from({ length: 200 }, (_, i) => server.users.put({ id: `u${i}`, name: `User ${i}` })),
    )
    const device = await createDevice({
      id: 'dev-a',
      store: memoryStore(),
      clock: new ManualClock(),
    })
    const log = Reflect.get(device.replica, 'log') as UpdateLog
    const deletingAtOpen = log.deletingBytes
    const bytesAtOpen = log.bytes
    const l = link(server.replica, device.replica)
    await l.settled()
    expect(device.users.list()).toHaveLength(200)
    // The roster arrived whole (stored as received): none of it is garbage.
    expect(log.bytes - bytesAtOpen).toBeGreaterThan(200 * 10)
    expect(log.deletingBytes).toBe(deletingAtOpen)
    // A server overwrite deletes the entry it replaces on the device too.
    const before = log.bytes
    await server.users.patch('u1', { name: 'Renamed' })
    await l.settled()
    expect(device.users.get('u1')?.name).toBe('Renamed')
    expect(log.deletingBytes - deletingAtOpen).toBe(log.bytes - before)
    l.close()
    await device.close()
    await server.close()
  })

  it('defers compaction while a device waits for an answer (deferCompaction), then compacts once idle', async () => {
    const clock = new ManualClock()
    const store = memoryStore()
    const device = await createDevice({ id: 'dev-a', store, clock })
    const release = device.replica.deferCompaction()
    const writes = limits.updatesBeforeCompactionMax + 5
    for (let i = 0; i < writes; i++) await device.users.put({ id: `u${i % 50}`, name: `N${i}` })
    // Due and idle long since: still deferred.
    await clock.advance(3 * limits.compactionIdleMs)
    await device.replica.drain()
    expect(await keysIn(store, keys.updatesFrom, keys.updatesTo)).toHaveLength(writes)
    expect(await store.get(keys.snapshot)).toBeUndefined()
    release()
    await clock.advance(limits.compactionIdleMs)
    await device.replica.drain()
    expect(await keysIn(store, keys.updatesFrom, keys.updatesTo)).toHaveLength(0)
    expect(await store.get(keys.snapshot)).toBeInstanceOf(Uint8Array)
    await device.close()
  })

  it('compacts at once, idle or not, after updatesBeforeCompactionHardMax updates', async () => {
    const clock = new ManualClock()
    const store = memoryStore()
    const server = await createServer({ store, clock, listen: false })
    for (let i = 0; i < limits.updatesBeforeCompactionHardMax + 3; i++) {
      await server.users.put({ id: `u${i % 100}`, name: `Name ${i}` })
    }
    // No time passed: only the hard bound can have compacted.
    expect(await keysIn(store, keys.updatesFrom, keys.updatesTo)).toHaveLength(3)
    expect(await store.get(keys.snapshot)).toBeInstanceOf(Uint8Array)
    await server.close()
  }, 60_000)
})

describe('the Yjs clientID', () => {
  it('is fresh after a crash (no clean close), kept after a clean close', async () => {
    const shared = new SharedStore(memoryStore())
    const first = await createDevice({ id: 'dev-a', store: shared })
    await first.users.put({ id: 'u1', name: 'Before the crash' })
    const crashedId = first.replica.clientId
    // `first` is abandoned here without close(): its clean marker is never written.

    const second = await createDevice({ id: 'dev-a', store: shared })
    expect(second.replica.openKind).toBe('crash')
    expect(second.replica.clientId).not.toBe(crashedId)
    expect(second.users.get('u1')).toEqual({ id: 'u1', name: 'Before the crash' })
    await second.users.put({ id: 'u2', name: 'After the crash' })
    await second.close()

    const third = await createDevice({ id: 'dev-a', store: shared })
    expect(third.replica.openKind).toBe('clean')
    expect(third.replica.clientId).toBe(second.replica.clientId)
    expect(third.users.list().map((u) => u.id)).toEqual(['u1', 'u2'])
    await third.close()
    await shared.inner.close()
  })

  it('never reuses a clientID the document already holds', async () => {
    const shared = new SharedStore(memoryStore())
    // Eight draws for the device's key seed, then the nonces its clientIDs
    // are derived from (core/signing.ts).
    const draws = [7, 7, 7, 7, 7, 7, 7, 7, 0x1111, 0x1111, 0x2222, 0x3333]
    const randomUint32 = (): number => draws.shift() ?? 0x4444
    const key = keyPairFromSeed(new Uint8Array(32).fill(0).map((_, i) => (i % 4 === 3 ? 7 : 0)))
    const first = await createDevice({ id: 'dev-a', store: shared, randomUint32 })
    expect(first.replica.clientId).toBe(deriveClientId(key.publicKey, 0x1111))
    await first.users.put({ id: 'u1', name: 'One' })

    // Crash; the random source offers the old id again: it must be skipped.
    const second = await createDevice({ id: 'dev-a', store: shared, randomUint32 })
    expect(second.replica.clientId).toBe(deriveClientId(key.publicKey, 0x2222))
    await second.close()
    await shared.inner.close()
  })
})

describe('a storage failure', () => {
  let faulty: FaultyStore
  let server: ServerPeer

  beforeEach(async () => {
    faulty = new FaultyStore(memoryStore())
    server = await createServer({ store: faulty })
    await server.users.put({ id: 'u1', name: 'Stored', email: 'stored@example.com' })
  })

  afterEach(async () => {
    await server.close()
  })

  it('rejects the write with STORAGE_FAILED, leaves the view unchanged, and later writes work', async () => {
    const before = { list: server.users.list(), events: server.events.query() }
    faulty.failNext()
    const results = await Promise.allSettled([
      server.users.put({ id: 'u2', name: 'Lost' }),
      server.users.patch('u1', { email: 'changed@example.com' }),
    ])
    for (const result of results) {
      expect(result.status).toBe('rejected')
      expect(
        hasCode(result.status === 'rejected' ? result.reason : undefined, 'STORAGE_FAILED'),
      ).toBe(true)
    }
    expect(faulty.faultsInjected).toBe(1)
    expect({ list: server.users.list(), events: server.events.query() }).toEqual(before)
    expect(server.users.get('u2')).toBeUndefined()

    await server.users.put({ id: 'u3', name: 'Later' })
    await server.users.patch('u1', { phone: '+1 2' })
    expect(server.users.list()).toEqual([
      { id: 'u1', name: 'Stored', email: 'stored@example.com', phone: '+1 2' },
      { id: 'u3', name: 'Later' },
    ])
    // What the store holds agrees with memory: a peer reopened on it shows the same.
    const reopened = await createServer({ store: new SharedStore(faulty) })
    expect(reopened.users.list()).toEqual(server.users.list())
    await reopened.close()
  })

  it('rejects a remote update with STORAGE_FAILED and leaves the view unchanged', async () => {
    const device = await createDevice({ id: 'dev-a', store: memoryStore() })
    await device.users.put({ id: 'u9', name: 'From the device' })
    const update = Y.encodeStateAsUpdate(device.replica.doc)
    const before = server.users.list()
    faulty.failNext()
    const error = await server.replica.applyRemote(update).then(
      () => undefined,
      (reason: unknown) => reason,
    )
    expect(hasCode(error, 'STORAGE_FAILED')).toBe(true)
    expect(server.users.list()).toEqual(before)
    expect(server.replica.replicaOf(asUserId('u9')).devices).toEqual([])

    // Sent again, it applies (and the server adopts the enrolment).
    await server.replica.applyRemote(update)
    expect(server.users.get('u9')).toEqual({ id: 'u9', name: 'From the device' })
    await device.close()
  })
})

describe('a compaction failure', () => {
  it('keeps the writes, records compaction-failed, and compacts on a later batch', async () => {
    const inner = memoryStore()
    let failSnapshots = 1
    // Fails the first batch that writes a snapshot, like a full disk would.
    const store: Store = {
      get: (key) => inner.get(key),
      put: (key, value) => inner.put(key, value),
      del: (key) => inner.del(key),
      range: (options: RangeOptions) => inner.range(options),
      close: () => inner.close(),
      batch: async (ops: readonly StoreOp[]) => {
        if (failSnapshots > 0 && ops.some((op) => op.key === keys.snapshot)) {
          failSnapshots--
          throw new Error('disk full')
        }
        await inner.batch(ops)
      },
    }
    const clock = new ManualClock()
    const server = await createServer({ store, listen: false, clock })
    const total = limits.updatesBeforeCompactionMax + 3
    for (let i = 0; i < total; i++) await server.users.put({ id: `u${i}`, name: `User ${i}` })
    await clock.advance(limits.compactionIdleMs) // the compaction fails
    await server.replica.drain()
    await server.users.put({ id: 'u-next', name: 'Next' })
    await clock.advance(limits.compactionIdleMs) // and is tried again
    await server.replica.drain()
    expect(server.users.list()).toHaveLength(total + 1)
    const failures = server.events.query({ type: 'compaction-failed' })
    expect(failures).toHaveLength(1)
    expect(failures[0]?.message).toContain('disk full')
    expect(failSnapshots).toBe(0)
    expect(await inner.get(keys.snapshot)).toBeInstanceOf(Uint8Array)
    await server.close()
  })
})

describe('the event log', () => {
  it('is bounded by eventsMax, in memory and on disk, across a reopen', async () => {
    const dir = await tempDir()
    const clock = fakeClock()
    let store = await openLevelStore(dir)
    let server = await createServer({ store, clock, eventsMax: 5 })
    for (let i = 1; i <= 8; i++) {
      clock.advance(1_000)
      await server.users.put({ id: `u${i}`, name: `User ${i}` })
    }
    const events = server.events.query()
    expect(events.map((e) => e.userId)).toEqual(['u4', 'u5', 'u6', 'u7', 'u8'])
    expect(events.map((e) => e.seq)).toEqual([4, 5, 6, 7, 8])
    expect(await keysIn(store, keys.eventsFrom, keys.eventsTo)).toEqual(
      [4, 5, 6, 7, 8].map((seq) => keys.event(seq)),
    )
    await server.close()

    store = await openLevelStore(dir)
    server = await createServer({ store, clock, eventsMax: 5 })
    expect(server.events.query()).toEqual(events)
    await server.users.put({ id: 'u9', name: 'User 9' })
    expect(server.events.query().map((e) => e.seq)).toEqual([5, 6, 7, 8, 9])
    await server.close()
  })

  it('is queryable by type, device, user and period', async () => {
    const clock = fakeClock(1_000_000)
    const server = await createServer({ store: memoryStore(), clock })
    const a = await createDevice({ id: 'dev-a', store: memoryStore(), clock })
    const b = await createDevice({ id: 'dev-b', store: memoryStore(), clock })
    const links = [link(server.replica, a.replica), link(server.replica, b.replica)]
    const settle = async () => {
      for (let round = 0; round < 3; round++) for (const l of links) await l.settled()
    }
    await server.users.put({ id: 'u1', name: 'One' }) // at 1_000_000
    await settle()
    clock.advance(1_000)
    await a.users.patch('u1', { phone: '+1' }) // at 1_001_000: server adopts from dev-a
    await settle()
    clock.advance(1_000)
    await b.users.put({ id: 'u2', name: 'Two' }) // at 1_002_000: server adopts from dev-b
    await settle()
    clock.advance(1_000)
    await server.users.delete('u2') // at 1_003_000
    await settle()

    const brief = (q: Parameters<ServerPeer['events']['query']>[0]) =>
      server.events.query(q).map((e) => [e.type, e.userId, e.deviceId ?? e.origin, e.at])
    expect(brief({})).toEqual([
      ['user-update-succeeded', 'u1', 'server', 1_000_000],
      ['user-update-succeeded', 'u1', 'dev-a', 1_001_000],
      ['user-update-succeeded', 'u2', 'dev-b', 1_002_000],
      ['user-deleted', 'u2', 'server', 1_003_000],
    ])
    expect(brief({ type: 'user-deleted' })).toEqual([['user-deleted', 'u2', 'server', 1_003_000]])
    expect(brief({ type: ['user-deleted', 'sync-failed'] })).toHaveLength(1)
    expect(brief({ deviceId: 'dev-a' })).toEqual([
      ['user-update-succeeded', 'u1', 'dev-a', 1_001_000],
    ])
    expect(brief({ userId: 'u2' }).map((e) => e[3])).toEqual([1_002_000, 1_003_000])
    // since is inclusive, until exclusive.
    expect(brief({ since: 1_001_000, until: 1_003_000 }).map((e) => e[3])).toEqual([
      1_001_000, 1_002_000,
    ])
    expect(brief({ since: 1_003_001 })).toEqual([])
    expect(brief({ userId: 'u1', type: 'user-update-succeeded', deviceId: 'dev-b' })).toEqual([])
    expect(brief({ limit: 2 }).map((e) => e[3])).toEqual([1_002_000, 1_003_000])
    // The device keeps its own log: its write, not the server's adoption.
    expect(a.events.query({ userId: 'u1' }).map((e) => [e.type, e.origin, e.deviceId])).toEqual([
      ['user-update-succeeded', 'device', 'dev-a'],
    ])

    for (const l of links) l.close()
    for (const peer of [server, a, b]) await peer.close()
  })
})
