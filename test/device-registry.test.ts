/**
 * The server's device registry (server-peer/device-registry.ts) is durable
 * where it matters (a new device, a revocation, a sync direction that
 * changed state: stored at once) and lazy where it does not (last seen and
 * the address move on every connection: stored within LAZY_FLUSH_MS, or on
 * close), so that devices reconnecting do not each cost the server a
 * durable write. In-memory transport and a manual clock.
 */
import { afterEach, describe, expect, it } from 'vitest'
import type { StoreOp } from '../core/store.js'
import { createDevice, type DevicePeer } from '../peers/create-device.js'
import { keys } from '../peers/storage-keys.js'
import { createServer, type ServerPeer } from '../server-peer/create-server.js'
import { DeviceRegistry, LAZY_FLUSH_MS } from '../server-peer/device-registry.js'
import { limits } from '../core/limits.js'
import { memoryStore } from '../storage/level-store.js'
import { memoryPair } from '../transports/memory-transport.js'
import { KeptOpenStore } from './helpers/forwarding-store.js'
import { ManualClock, settle } from './helpers/manual-clock.js'

const SITE_KEY = 'registry-site-key'
const closers: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close().catch(() => undefined)
})

/** A store that survives its peer (the next server reopens it) and counts registry writes. */
class CountingStore extends KeptOpenStore {
  registryWrites = 0
  /** Per store batch, the device records it wrote (by id). */
  readonly deviceBatches: string[][] = []
  /** Per store batch, whether it wrote to the event log. */
  readonly withEvents: boolean[] = []
  override batch(ops: readonly StoreOp[]): Promise<void> {
    const devices = ops.filter((op) => op.key.startsWith(keys.record('device/')))
    if (devices.length > 0) this.registryWrites++
    this.deviceBatches.push(devices.map((op) => op.key.slice(keys.record('device/').length)))
    this.withEvents.push(ops.some((op) => op.key.startsWith(keys.eventsFrom)))
    return super.batch(ops)
  }
}

async function server(clock: ManualClock, store: CountingStore): Promise<ServerPeer> {
  const peer = await createServer({ store, clock, listen: false, siteKey: SITE_KEY })
  closers.push(() => peer.close())
  return peer
}

async function device(clock: ManualClock, peer: () => ServerPeer): Promise<DevicePeer> {
  let n = 0
  const d = await createDevice({
    id: 'D1',
    name: 'lobby',
    store: memoryStore(),
    clock,
    server: 'ws://sim-server',
    serverTransport: {
      connect: async (url) => {
        const [mine, theirs] = memoryPair('device', 'server')
        peer().accept(theirs, url)
        return mine
      },
      close: async () => undefined,
    },
    siteKey: SITE_KEY,
    randomUint32: () => 0x1000 + n++,
  })
  closers.push(() => d.close())
  return d
}

describe('device registry persistence', () => {
  it('stores a new device at once, and reconnections only lazily', async () => {
    const clock = new ManualClock()
    const store = new CountingStore(memoryStore())
    const s = await server(clock, store)
    const d = await device(clock, () => s)
    await d.sync.whenIdle()
    await settle()
    const joined = store.registryWrites
    expect(joined).toBeGreaterThan(0)
    expect(s.devices.list()).toMatchObject([{ id: 'D1', name: 'lobby', state: 'connected' }])

    // Ten reconnections within the flush interval: no registry write yet.
    for (let i = 0; i < 10; i++) {
      d.serverLink?.retry()
      await settle()
    }
    await d.sync.whenIdle()
    expect(store.registryWrites).toBe(joined)
    const seen = s.devices.list()[0]?.lastSeen

    // ... then one write, within LAZY_FLUSH_MS.
    await clock.advance(LAZY_FLUSH_MS)
    await settle()
    expect(store.registryWrites).toBe(joined + 1)

    // A server that crashes (no close) still knows the device, and its last
    // seen time as of that flush.
    const again = await createServer({ store, clock, listen: false, siteKey: SITE_KEY })
    closers.push(() => again.close())
    expect(again.devices.list()).toMatchObject([{ id: 'D1', name: 'lobby', lastSeen: seen }])
  })

  it('stores what is still in memory when the server closes', async () => {
    const clock = new ManualClock()
    const store = new CountingStore(memoryStore())
    let current = await server(clock, store)
    const d = await device(clock, () => current)
    await d.sync.whenIdle()
    await clock.advance(5_000)
    d.serverLink?.retry()
    await settle()
    await d.sync.whenIdle()
    const seen = current.devices.list()[0]?.lastSeen
    expect(seen).toBe(clock.now())
    await current.close()
    current = await server(clock, store)
    expect(current.devices.list()[0]?.lastSeen).toBe(seen)
  })

  it('stores a revocation at once', async () => {
    const clock = new ManualClock()
    const store = new CountingStore(memoryStore())
    const s = await server(clock, store)
    const d = await device(clock, () => s)
    await d.sync.whenIdle()
    const before = store.registryWrites
    await s.devices.revoke('D1')
    expect(store.registryWrites).toBe(before + 1)
    const again = await createServer({ store, clock, listen: false, siteKey: SITE_KEY })
    closers.push(() => again.close())
    expect(again.devices.list()[0]).toMatchObject({ id: 'D1', revoked: true })
  })

  it('writes devices that join together in batches of deviceRecordsPerBatchMax, one after another', async () => {
    const clock = new ManualClock()
    const store = new CountingStore(memoryStore())
    const s = await server(clock, store)
    const registry = new DeviceRegistry(clock, s.replica)
    const cap = limits.deviceRecordsPerBatchMax
    const ids = Array.from({ length: 3 * cap + 5 }, (_, i) => `F-${i}`)
    store.deviceBatches.length = 0
    // All in one turn, as a flood's joins of one upgrade turn.
    for (const id of ids) registry.seen(id, 'flood', '127.0.0.2')
    await s.replica.drain()
    const batches = store.deviceBatches.filter((b) => b.length > 0)
    expect(batches.length).toBe(4)
    for (const b of batches) expect(b.length).toBeLessThanOrEqual(cap)
    // In the order they joined, each once.
    expect(batches.flat()).toEqual(ids)
    // Durable without a close: a server on the same store knows them all.
    const again = await createServer({ store, clock, listen: false, siteKey: SITE_KEY })
    closers.push(() => again.close())
    expect(again.devices.list().filter((d) => d.id.startsWith('F-'))).toHaveLength(ids.length)
  })

  it('stores a revocation in its own call even when a flood of joins waits to be stored', async () => {
    const clock = new ManualClock()
    const store = new CountingStore(memoryStore())
    const s = await server(clock, store)
    const registry = new DeviceRegistry(clock, s.replica)
    const ids = Array.from({ length: 3 * limits.deviceRecordsPerBatchMax }, (_, i) => `F-${i}`)
    for (const id of ids) registry.seen(id, 'flood', '127.0.0.2')
    const last = ids[ids.length - 1] as string
    store.deviceBatches.length = 0
    store.withEvents.length = 0
    await registry.revoke(last)
    await s.replica.drain()
    // The revocation's batch (the one with its event) holds its record,
    // though that device joined last: it is durable once revoke resolves.
    const revocations = store.deviceBatches.filter((_, i) => store.withEvents[i] === true)
    expect(revocations).toHaveLength(1)
    expect(revocations[0]).toContain(last)
    const again = await createServer({ store, clock, listen: false, siteKey: SITE_KEY })
    closers.push(() => again.close())
    expect(again.devices.list().filter((d) => d.id.startsWith('F-'))).toHaveLength(ids.length)
    expect(again.devices.list().find((d) => d.id === last)?.revoked).toBe(true)
  })
})
