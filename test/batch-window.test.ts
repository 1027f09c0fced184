/**
 * The remote batch window (ReplicaOptions.remoteBatchWindowMs, the server's
 * `batchWindowMs`): under steady inbound traffic, remote updates that
 * arrive within the window share one batch (one store write); the first
 * after a quiet spell goes at once; a local write or bookkeeping does not
 * wait; closing flushes a waiting batch. Batches are counted through the
 * store, not timed.
 */
import { describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import type { DeviceEntry } from '../core/entries.js'
import { usersRootName } from '../core/entries.js'
import { asUserId, asWriterId } from '../core/ids.js'
import { limits } from '../core/limits.js'
import { RecordSchema } from '../core/schema.js'
import type { StoreOp } from '../core/store.js'
import { deviceWrite } from '../core/writes.js'
import { Replica } from '../peers/replica.js'
import { keys } from '../peers/storage-keys.js'
import { memoryStore } from '../storage/level-store.js'
import { ForwardingStore } from './helpers/forwarding-store.js'

/** Counts the store writes that carry Yjs updates (one per batch that changed the document). */
class CountingStore extends ForwardingStore {
  updateWrites = 0
  /** Every store write, bookkeeping included. */
  writes = 0
  override batch(ops: readonly StoreOp[]): Promise<void> {
    this.writes++
    if (ops.some((op) => op.type === 'put' && op.key.startsWith(keys.updatesFrom)))
      this.updateWrites++
    return super.batch(ops)
  }
}

const D2 = asWriterId('d2')

async function open(windowMs: number): Promise<{ replica: Replica; store: CountingStore }> {
  const store = new CountingStore(memoryStore())
  let next = 1
  const replica = await Replica.open({
    writerId: asWriterId('server'),
    store,
    clock: { now: () => 1_000, setTimeout: () => undefined, clearTimeout: () => undefined },
    schema: new RecordSchema(),
    randomUint32: () => next++,
    remoteBatchWindowMs: windowMs,
  })
  store.updateWrites = 0
  return { replica, store }
}

/** Another writer's document: each call makes one edit and returns it as an update. */
function remoteWriter(): (n: number) => Uint8Array {
  const doc = new Y.Doc()
  doc.clientID = 4242
  const root = doc.getMap<DeviceEntry>(usersRootName(D2))
  return (n) => {
    const before = Y.encodeStateVector(doc)
    const id = asUserId(`u${n % 3}`)
    root.set(id, deviceWrite(root.get(id), 0, new Map([['title', `t${n}`]]), 1_000 + n))
    return Y.encodeStateAsUpdate(doc, before)
  }
}

const macrotask = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

describe('remote batch window', () => {
  it('the storage key prefix the count relies on is the update log', async () => {
    const { replica, store } = await open(0)
    await replica.applyRemote(remoteWriter()(0))
    expect(store.updateWrites).toBe(1)
    await replica.close()
  })

  it('without a window, updates a turn of the event loop apart are batches of their own', async () => {
    const { replica, store } = await open(0)
    const edit = remoteWriter()
    const applied: Promise<void>[] = [replica.applyRemote(edit(0))]
    for (let n = 1; n <= 3; n++) {
      await applied[n - 1]
      await macrotask()
      applied.push(replica.applyRemote(edit(n)))
    }
    await Promise.all(applied)
    expect(store.updateWrites).toBe(4)
    await replica.close()
  })

  it('with a window, the first goes at once and those arriving within it share one batch', async () => {
    const { replica, store } = await open(300)
    const edit = remoteWriter()
    await replica.applyRemote(edit(0))
    expect(store.updateWrites).toBe(1)
    const applied: Promise<void>[] = []
    for (let n = 1; n <= 3; n++) {
      applied.push(replica.applyRemote(edit(n)))
      await macrotask()
    }
    await Promise.all(applied)
    expect(store.updateWrites).toBe(2)
    expect(replica.doc.getMap(usersRootName(D2)).size).toBe(3)
    await replica.close()
  })

  it('a local write ends the wait: it and the waiting updates go in one batch at once', async () => {
    const { replica, store } = await open(60_000)
    const edit = remoteWriter()
    await replica.applyRemote(edit(0))
    const waiting = replica.applyRemote(edit(1))
    await macrotask()
    expect(store.updateWrites).toBe(1)
    const writesBefore = store.writes
    await replica.write((ctx) => ctx.event({ type: 'sync-started', direction: 'serverToDevice' }))
    await waiting
    expect(store.updateWrites).toBe(2)
    expect(store.writes - writesBefore).toBe(1)
    await replica.close()
  })

  it('a full batch of updates does not wait', async () => {
    const { replica, store } = await open(60_000)
    const edit = remoteWriter()
    await replica.applyRemote(edit(0))
    const updates = Array.from({ length: limits.writeBatchOpsMax }, (_, i) => edit(i + 1))
    await Promise.all(updates.map((update) => replica.applyRemote(update)))
    expect(store.updateWrites).toBe(2)
    await replica.close()
  })

  it('closing flushes a batch waiting out its window', async () => {
    const { replica, store } = await open(60_000)
    const edit = remoteWriter()
    await replica.applyRemote(edit(0))
    const waiting = replica.applyRemote(edit(1))
    await macrotask()
    await replica.close()
    await waiting
    expect(store.updateWrites).toBe(2)
  })
})
