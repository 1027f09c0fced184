/**
 * The replica's storage of received updates (peers/replica.ts,
 * applyReceived): an update that brings only what the document lacks is
 * stored and told to listeners as received, instead of as Yjs's re-encoding;
 * everything else is stored as what changed. In every case the stored log
 * replays to the document in memory, and an update that changes nothing is
 * neither stored nor told (peers relay what they are told: a relayed no-op
 * would go round forever).
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { hasCode } from '../core/errors.js'
import { asWriterId } from '../core/ids.js'
import { RecordSchema } from '../core/schema.js'
import type { Store } from '../core/store.js'
import { Replica, type ReplicaHooks, type ReplicaUpdate } from '../peers/replica.js'
import { keys } from '../peers/storage-keys.js'
import { memoryStore, openLevelStore } from '../storage/level-store.js'
import { KeptOpenStore } from './helpers/forwarding-store.js'

/** A store that stays open when the replica closes it, so the next replica can reopen it. */
class KeptStore extends KeptOpenStore {}

let nextId = 1
function open(store: Store, hooks?: ReplicaHooks): Promise<Replica> {
  return Replica.open({
    writerId: asWriterId('d1'),
    store,
    clock: { now: () => 1_000, setTimeout: () => undefined, clearTimeout: () => undefined },
    schema: new RecordSchema(),
    randomUint32: () => 1_000_000 + nextId++,
    ...(hooks === undefined ? {} : { hooks }),
  })
}

/** The update log as stored, oldest first. */
async function storedUpdates(store: Store): Promise<Uint8Array[]> {
  const found: Uint8Array[] = []
  for await (const [, value] of store.range({ gte: keys.updatesFrom, lt: keys.updatesTo })) {
    found.push(value)
  }
  return found
}

/** What a replay must reproduce: state vector, delete set, and every map root. */
function contentOf(doc: Y.Doc): unknown {
  const roots: Record<string, unknown> = {}
  // Reads create empty roots (the replica looks up its policy map): skip those.
  for (const name of [...doc.share.keys()].sort()) {
    const root = doc.getMap(name)
    if (root.size > 0) roots[name] = root.toJSON()
  }
  return {
    sv: [...Y.encodeStateVector(doc)],
    snapshot: [...Y.encodeSnapshot(Y.snapshot(doc))],
    roots,
  }
}

/** Reopens the store (no compaction: the replica is dropped, not closed) and compares. */
async function expectReplays(store: Store, replica: Replica): Promise<void> {
  const reopened = await open(store)
  expect(contentOf(reopened.doc)).toEqual(contentOf(replica.doc))
}

/** A source document with some history: entries, overwrites, a nested map, deletes. */
function source(clientID: number): Y.Doc {
  const doc = new Y.Doc()
  doc.clientID = clientID
  const users = doc.getMap('u:server')
  for (let i = 0; i < 20; i++) users.set(`user-${i}`, { f: { name: `User ${i}` }, t: i })
  for (let i = 0; i < 5; i++) users.set(`user-${i}`, { f: { name: `Renamed ${i}` }, t: 100 + i })
  users.delete('user-7')
  const nested = new Y.Map<unknown>()
  doc.getMap('other').set('nested', nested)
  nested.set('x', new Uint8Array([1, 2, 3]))
  return doc
}

function listen(replica: Replica): ReplicaUpdate[] {
  const told: ReplicaUpdate[] = []
  replica.onUpdate((u) => told.push(u))
  return told
}

describe('a received update that brings only what the replica lacks', () => {
  it('is stored and told as received, and the log replays to the same document', async () => {
    const store = new KeptStore(memoryStore())
    const replica = await open(store)
    const told = listen(replica)
    const update = Y.encodeStateAsUpdate(source(11))
    await replica.applyRemote(update, 'link-1')
    const stored = await storedUpdates(store)
    expect(stored).toHaveLength(1)
    expect(stored[0]).toEqual(update)
    expect(told).toEqual([{ update, origin: 'remote', from: 'link-1' }])
    // The very bytes received, not an equal re-encoding.
    expect(told[0]?.update).toBe(update)
    expect(replica.doc.getMap('u:server').get('user-3')).toEqual({
      f: { name: 'Renamed 3' },
      t: 103,
    })
    await expectReplays(store, replica)
  })

  it('is stored from a view into a larger buffer (a message) and read back on LevelDB', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'rostersync-received-'))
    try {
      const update = Y.encodeStateAsUpdate(source(12))
      const message = new Uint8Array(update.length + 9)
      message.set([0xff, 0xff, 0xff, 0xff], 0)
      message.set(update, 4)
      message.set([0xee, 0xee, 0xee, 0xee, 0xee], 4 + update.length)
      const view = message.subarray(4, 4 + update.length)
      const replica = await open(await openLevelStore(dir))
      await replica.applyRemote(view, 'link-1')
      const expected = contentOf(replica.doc)
      await replica.close()
      // close() compacts: read the snapshot back, and the raw log before it.
      const reopened = await open(await openLevelStore(dir))
      expect(contentOf(reopened.doc)).toEqual(expected)
      await reopened.close()
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('leaves a no-op update unstored and untold, whether a repeat or a bare delete set', async () => {
    const store = new KeptStore(memoryStore())
    const replica = await open(store)
    const src = source(13)
    await replica.applyRemote(Y.encodeStateAsUpdate(src), 'link-1')
    const told = listen(replica)
    await replica.applyRemote(Y.encodeStateAsUpdate(src), 'link-2')
    // What a state exchange with an up-to-date peer carries: its delete set.
    await replica.applyRemote(
      Y.encodeStateAsUpdate(src, Y.encodeStateVector(replica.doc)),
      'link-2',
    )
    // What an up-to-date peer with nothing deleted sends: an empty update,
    // which passes as "only new" and must still not be told.
    await replica.applyRemote(Y.encodeStateAsUpdate(new Y.Doc()), 'link-2')
    expect(told).toEqual([])
    expect(await storedUpdates(store)).toHaveLength(1)
  })

  it('stores an overlapping update re-encoded: what it repeats is not stored again', async () => {
    const store = new KeptStore(memoryStore())
    const replica = await open(store)
    const src = source(14)
    await replica.applyRemote(Y.encodeStateAsUpdate(src), 'link-1')
    src.getMap('u:server').set('user-1', { f: { name: 'Again' }, t: 200 })
    const full = Y.encodeStateAsUpdate(src)
    await replica.applyRemote(full, 'link-1')
    const stored = await storedUpdates(store)
    expect(stored).toHaveLength(2)
    expect((stored[1] as Uint8Array).length).toBeLessThan(full.length / 4)
    await expectReplays(store, replica)
  })
})

describe('a received update that brings nothing', () => {
  /** Counts the Yjs transactions of `doc` from now on. */
  function transactions(doc: Y.Doc): { count: number } {
    const counter = { count: 0 }
    doc.on('afterTransaction', () => counter.count++)
    return counter
  }

  it('is not applied at all (a duplicate, a delete set already applied): no Yjs transaction', async () => {
    const replica = await open(new KeptStore(memoryStore()))
    const src = source(17)
    await replica.applyRemote(Y.encodeStateAsUpdate(src), 'link-1')
    const seen = transactions(replica.doc)
    await replica.applyRemote(Y.encodeStateAsUpdate(src), 'link-2')
    await replica.applyRemote(
      Y.encodeStateAsUpdate(src, Y.encodeStateVector(replica.doc)),
      'link-2',
    )
    expect(seen.count).toBe(0)
    expect(contentOf(replica.doc)).toEqual(contentOf(src))
  })

  it('still applies a delete set that deletes an item held and not yet deleted', async () => {
    const store = new KeptStore(memoryStore())
    const replica = await open(store)
    const src = source(18)
    await replica.applyRemote(Y.encodeStateAsUpdate(src), 'link-1')
    // A delete-only change: no new struct, one item of the replica deleted.
    const updates: Uint8Array[] = []
    src.on('update', (u: Uint8Array) => updates.push(u))
    src.getMap('u:server').delete('user-12')
    expect(updates).toHaveLength(1)
    await replica.applyRemote(updates[0] as Uint8Array, 'link-1')
    expect(replica.doc.getMap('u:server').has('user-12')).toBe(false)
    expect(contentOf(replica.doc)).toEqual(contentOf(src))
    await expectReplays(store, replica)
  })

  it('is not mistaken for one when it deletes an item still to come', async () => {
    const replica = await open(new KeptStore(memoryStore()))
    const src = source(19)
    const before = Y.encodeStateVector(src)
    src.getMap('u:server').set('late', { f: { name: 'Late' }, t: 300 })
    const late = Y.encodeStateAsUpdate(src, before)
    src.getMap('u:server').delete('late')
    // The delete set names the late item; the replica holds no struct of it.
    await replica.applyRemote(Y.encodeStateAsUpdate(src, Y.encodeStateVector(src)), 'link-1')
    await replica.applyRemote(Y.encodeStateAsUpdate(source(19)), 'link-1')
    await replica.applyRemote(late, 'link-1')
    expect(replica.doc.getMap('u:server').has('late')).toBe(false)
  })
})

describe('a received update applied with something else in the batch', () => {
  it('stores a held-back update integrated after it, and a hook write, in order', async () => {
    const store = new KeptStore(memoryStore())
    const hooks: ReplicaHooks = {
      afterRemote: (users, ctx) => {
        for (const id of users) ctx.setOwnEntry(id, { s: {}, f: {} } as never)
      },
    }
    const replica = await open(store, hooks)
    const told = listen(replica)
    const src = new Y.Doc()
    src.clientID = 15
    const updates: Uint8Array[] = []
    src.on('update', (u: Uint8Array) => updates.push(u))
    src.getMap('u:server').set('a', { f: { name: 'A' }, t: 1 })
    src.getMap('u:server').set('b', { f: { name: 'B' }, t: 2 })
    const [first, second] = updates as [Uint8Array, Uint8Array]
    // One tick: one batch. The second arrives first and waits for the first.
    await Promise.all([replica.applyRemote(second, 'link-1'), replica.applyRemote(first, 'link-1')])
    expect(replica.doc.getMap('u:server').toJSON()).toEqual({
      a: { f: { name: 'A' }, t: 1 },
      b: { f: { name: 'B' }, t: 2 },
    })
    expect(replica.doc.getMap('u:d1').size).toBe(2)
    const stored = await storedUpdates(store)
    expect(stored[0]).toEqual(first)
    expect(stored).toHaveLength(3)
    // One merged update per origin; a held-back update was integrated, so
    // no single sender is named (it could be another link's).
    expect(told.map((u) => [u.origin, u.from])).toEqual([
      ['remote', undefined],
      ['local', undefined],
    ])
    await expectReplays(store, replica)
  })

  it('stores an update whose items wait for another client as what was integrated', async () => {
    const store = new KeptStore(memoryStore())
    const replica = await open(store)
    const a = new Y.Doc()
    a.clientID = 21
    a.getArray('list').insert(0, ['from a'])
    const b = new Y.Doc()
    b.clientID = 22
    Y.applyUpdate(b, Y.encodeStateAsUpdate(a))
    const before = Y.encodeStateVector(b)
    b.getArray('list').insert(1, ['from b'])
    const onlyB = Y.encodeStateAsUpdate(b, before)
    const told = listen(replica)
    // b's item names a's item as its origin: Yjs keeps it pending.
    await replica.applyRemote(onlyB, 'link-1')
    expect(replica.doc.store.pendingStructs).not.toBeNull()
    expect(told).toEqual([])
    expect(await storedUpdates(store)).toHaveLength(0)
    await replica.applyRemote(Y.encodeStateAsUpdate(a), 'link-1')
    expect(replica.doc.getArray('list').toJSON()).toEqual(['from a', 'from b'])
    expect(replica.doc.store.pendingStructs).toBeNull()
    const reopened = await open(store)
    expect(reopened.doc.getArray('list').toJSON()).toEqual(['from a', 'from b'])
    expect([...Y.encodeStateVector(reopened.doc)]).toEqual([...Y.encodeStateVector(replica.doc)])
  })

  it('stores what an observer wrote while the update applied (the document is public)', async () => {
    const store = new KeptStore(memoryStore())
    const replica = await open(store)
    const told = listen(replica)
    replica.doc.getMap('u:server').observe(() => {
      replica.doc.getMap('other').set('seen', true)
    })
    await replica.applyRemote(Y.encodeStateAsUpdate(source(16)), 'link-1')
    expect(replica.doc.getMap('other').get('seen')).toBe(true)
    // Stored as one update covering both; not tagged with the sender, so
    // the sender gets the observer's write too.
    expect(told.map((u) => [u.origin, u.from])).toEqual([['local', undefined]])
    await expectReplays(store, replica)
  })

  it('stores only what the update and the observer changed, not what was held before', async () => {
    const store = new KeptStore(memoryStore())
    const replica = await open(store)
    await replica.applyRemote(Y.encodeStateAsUpdate(source(21)), 'link-1')
    replica.doc.getMap('u:server').observe(() => {
      replica.doc.getMap('other').set('seen', true)
    })
    const second = new Y.Doc()
    second.clientID = 22
    second.getMap('u:server').set('user-new', { f: { name: 'New' }, t: 300 })
    await replica.applyRemote(Y.encodeStateAsUpdate(second), 'link-2')
    const stored = await storedUpdates(store)
    expect(stored).toHaveLength(2)
    // The second holds client 22's struct and the observer's write, nothing of client 21.
    const clients = Y.decodeStateVector(Y.encodeStateVectorFromUpdate(stored[1] as Uint8Array))
    expect(clients.get(22)).toBe(1)
    expect(clients.has(21)).toBe(false)
    await expectReplays(store, replica)
  })
})

describe('a malformed update', () => {
  it('is refused before any of it is applied or stored', async () => {
    const store = new KeptStore(memoryStore())
    const replica = await open(store)
    const good = Y.encodeStateAsUpdate(source(17))
    // A valid update with a corrupt delete set: Yjs would integrate the
    // structs and then throw.
    const bad = new Uint8Array([...good.subarray(0, good.length - 1), 0x80])
    const error: unknown = await replica.applyRemote(bad, 'link-1').catch((e: unknown) => e)
    expect(hasCode(error, 'MALFORMED_MESSAGE')).toBe(true)
    expect(replica.doc.getMap('u:server').size).toBe(0)
    expect(await storedUpdates(store)).toHaveLength(0)
  })
})
