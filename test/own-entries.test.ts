/**
 * What keeps a device's own writes and a peer's answers safe across a lost
 * history (peers/replica.ts): the merge of a device's concurrent entries of
 * one user (a restored backup), answers read only from durable state
 * (`whenDurable`), and own writes held from a full sync's wipe until the
 * roster is back (`holdWrites`).
 */
import { describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import type { DeviceEntry } from '../core/entries.js'
import { usersRootName } from '../core/entries.js'
import { asUserId, asWriterId } from '../core/ids.js'
import { RecordSchema } from '../core/schema.js'
import type { Store, StoreOp } from '../core/store.js'
import { deviceWrite, mergeDeviceEntries } from '../core/writes.js'
import { Replica } from '../peers/replica.js'
import { memoryStore } from '../storage/level-store.js'
import { ForwardingStore } from './helpers/forwarding-store.js'

const D1 = asWriterId('d1')
const U1 = asUserId('u1')

function open(store: Store, clientIds: number[]): Promise<Replica> {
  return Replica.open({
    writerId: D1,
    store,
    clock: { now: () => 1_000, setTimeout: () => undefined, clearTimeout: () => undefined },
    schema: new RecordSchema(),
    randomUint32: () => {
      const next = clientIds.shift()
      if (next === undefined) throw new Error('test ran out of clientIDs')
      return next
    },
  })
}

/** The device's own entry for u1, as its replica holds it. */
function ownEntry(replica: Replica): DeviceEntry | undefined {
  return replica.replicaOf(U1).devices.find(([writer]) => writer === D1)?.[1]
}

/** Writes fields into the device's own entry for u1, on top of what it holds. */
function write(replica: Replica, fields: Record<string, string>, stamp: number): Promise<void> {
  return replica.write((ctx) => {
    const prev = ctx.replicaOf(U1).devices.find(([writer]) => writer === D1)?.[1]
    ctx.setOwnEntry(U1, deviceWrite(prev, 0, new Map(Object.entries(fields)), stamp))
  })
}

describe('mergeDeviceEntries', () => {
  const a: DeviceEntry = { e: 0, f: { name: 'Ann', email: 'a@x' }, s: { name: 10, email: 10 } }
  const b: DeviceEntry = { e: 0, f: { name: 'Ann', phone: '1' }, s: { name: 10, phone: 20 } }

  it('keeps the latest stamp of every field, whatever the order', () => {
    const expected = {
      e: 0,
      f: { name: 'Ann', email: 'a@x', phone: '1' },
      s: { name: 10, email: 10, phone: 20 },
    }
    expect(mergeDeviceEntries([a, b])).toEqual(expected)
    expect(mergeDeviceEntries([b, a])).toEqual(expected)
  })

  it('a later clear (stamped, no value) wins over an older value', () => {
    const cleared: DeviceEntry = { e: 0, f: { name: 'Ann' }, s: { name: 10, email: 30 } }
    expect(mergeDeviceEntries([a, cleared])).toEqual({
      e: 0,
      f: { name: 'Ann' },
      s: { name: 10, email: 30 },
    })
  })

  it('drops entries of an older server epoch (written for a deleted user: rule 4)', () => {
    const reborn: DeviceEntry = { e: 1, f: { title: 'eng' }, s: { title: 5 } }
    expect(mergeDeviceEntries([b, reborn, a])).toEqual(reborn)
  })

  it('breaks a tie of stamps the same way in every order', () => {
    const x: DeviceEntry = { e: 0, f: { name: 'Xena' }, s: { name: 10 } }
    const y: DeviceEntry = { e: 0, f: { name: 'Yann' }, s: { name: 10 } }
    expect(mergeDeviceEntries([x, y])).toEqual(mergeDeviceEntries([y, x]))
  })
})

describe('a restored device writing a user again', () => {
  // Both orders of the two clientIDs: Yjs keeps the entry of the greater
  // one, so without the merge one order loses the restored device's write
  // and the other the write the server had.
  it.each([
    ['the new clientID sorts first', 900, 100],
    ['the new clientID sorts last', 100, 900],
  ])('keeps both writes when %s', async (_label, before, after) => {
    const original = await open(memoryStore(), [before])
    await write(original, { name: 'Ann' }, 10)
    const backup = Y.encodeStateAsUpdate(original.doc)
    await write(original, { email: 'ann@example.com' }, 20) // the server has this one
    const serverHolds = Y.encodeStateAsUpdate(original.doc)

    // The data directory goes back to the backup; after the crash, a fresh clientID.
    const restored = await open(memoryStore(), [after])
    await restored.applyRemote(backup, 'backup')
    await write(restored, { phone: '+44 1' }, 30) // offline, on top of the backup
    await restored.applyRemote(serverHolds, 'server')
    await restored.drain()

    expect(ownEntry(restored)).toEqual({
      e: 0,
      f: { name: 'Ann', email: 'ann@example.com', phone: '+44 1' },
      s: { name: 10, email: 20, phone: 30 },
    })
    // Any peer that receives everything ends with the merged entry too.
    const other = new Y.Doc()
    Y.applyUpdate(other, serverHolds)
    Y.applyUpdate(other, Y.encodeStateAsUpdate(restored.doc))
    expect(other.getMap(usersRootName(D1)).get('u1')).toEqual(ownEntry(restored))
    await original.close()
    await restored.close()
  })

  it('writes nothing more when the entry that came back is the one it builds on', async () => {
    const first = await open(memoryStore(), [500])
    await write(first, { name: 'Ann' }, 10)
    const sent = Y.encodeStateAsUpdate(first.doc)
    const second = await open(memoryStore(), [600])
    await second.applyRemote(sent, 'peer')
    const vector = Y.encodeStateVector(second.doc)
    await second.applyRemote(sent, 'peer')
    expect(Y.encodeStateVector(second.doc)).toEqual(vector)
    await first.close()
    await second.close()
  })
})

/** A store whose batches wait until the test lets them through. */
class GatedStore extends ForwardingStore {
  private gate: Promise<void> = Promise.resolve()
  private openGate: () => void = () => undefined
  hold(): void {
    this.gate = new Promise<void>((resolve) => (this.openGate = resolve))
  }
  release(): void {
    this.openGate()
  }
  override async batch(ops: readonly StoreOp[]): Promise<void> {
    await this.gate
    return super.batch(ops)
  }
}

describe('Replica.whenDurable', () => {
  it('reads only once the batch in flight is on disk, before its update is told', async () => {
    const store = new GatedStore(memoryStore())
    const replica = await open(store, [77])
    const order: string[] = []
    replica.onUpdate(() => order.push('told'))
    store.hold()
    const writing = write(replica, { name: 'Ann' }, 10)
    await new Promise((resolve) => setTimeout(resolve, 5)) // the batch is applied, not durable
    expect(ownEntry(replica)).toBeDefined()
    const read = replica.whenDurable((doc) => {
      order.push('read')
      return Y.encodeStateVector(doc).byteLength
    })
    await new Promise((resolve) => setTimeout(resolve, 5))
    expect(order).toEqual([])
    store.release()
    await writing
    expect(await read).toBeGreaterThan(1)
    expect(order).toEqual(['read', 'told'])
    await replica.close()
  })

  it('reads at once while only remote updates are being written, claiming what is durable', async () => {
    const source = await open(memoryStore(), [500])
    await write(source, { name: 'Ann' }, 10)
    const store = new GatedStore(memoryStore())
    const replica = await open(store, [600])
    store.hold()
    const applying = replica.applyRemote(Y.encodeStateAsUpdate(source.doc), 'peer')
    await new Promise((resolve) => setTimeout(resolve, 5)) // applied, not durable
    const read = await replica.whenDurable((doc, vector) => ({
      inMemory: Y.getState(doc.store, 500),
      claimed: Y.decodeStateVector(vector).get(500) ?? 0,
    }))
    // Not kept waiting for the disk, and the state vector it may send (the
    // server's acknowledgement) does not claim the update yet.
    expect(read).toEqual({ inMemory: 1, claimed: 0 })
    store.release()
    await applying
    const after = await replica.whenDurable((_doc, vector) => Y.decodeStateVector(vector).get(500))
    expect(after).toBe(1)
    await source.close()
    await replica.close()
  })

  it('reads at once when nothing is in flight', async () => {
    const replica = await open(memoryStore(), [78])
    let ran = false
    const read = replica.whenDurable(() => (ran = true))
    expect(ran).toBe(true)
    await read
    await replica.close()
  })
})

describe('holdWrites (a full sync, from the wipe to the fetch)', () => {
  it('keeps own writes queued while remote updates apply, until released', async () => {
    const source = await open(memoryStore(), [300])
    await source.write((ctx) =>
      ctx.setOwnEntry(asUserId('u9'), { e: 0, f: { name: 'Zoe' }, s: { name: 5 } }),
    )
    const replica = await open(memoryStore(), [400, 401])
    await write(replica, { name: 'Ann' }, 10)
    await replica.wipe({ local: false, holdWrites: true })
    let written = false
    const writing = write(replica, { email: 'ann@example.com' }, 20).then(() => (written = true))
    await replica.applyRemote(Y.encodeStateAsUpdate(source.doc), 'server')
    await new Promise((resolve) => setTimeout(resolve, 5))
    expect(written).toBe(false)
    expect(ownEntry(replica)).toBeUndefined()
    replica.releaseWrites()
    await writing
    expect(written).toBe(true)
    await source.close()
    await replica.close()
  })
})
