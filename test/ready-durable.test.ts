/**
 * A device's first full sync resolves (`whenReady()`, `sync.full()`) only
 * once its record of being offline-ready is durable. A black-box probe
 * SIGKILLed a device right after `whenReady()` resolved: about one restart
 * in five came back "online only" (`offlineReady: false`), the record's
 * write having been left to finish on its own.
 *
 * The device's store holds the write of that record until the test lets it
 * go; the real crash (a child process killed) is the probe's.
 */
import { afterEach, describe, expect, it } from 'vitest'
import type { StoreOp } from '../core/store.js'
import { memoryStore } from '../storage/level-store.js'
import { ForwardingStore } from './helpers/forwarding-store.js'
import { ManualClock, settle } from './helpers/manual-clock.js'
import { memorySite, type MemorySite } from './helpers/memory-site.js'

/** Holds, once armed, every batch that writes the device's sync record. */
class RecordHoldingStore extends ForwardingStore {
  armed = false
  held: Array<() => void> = []

  override async batch(ops: readonly StoreOp[]): Promise<void> {
    if (this.armed && ops.some((op) => op.key.endsWith('sync/state')))
      await new Promise<void>((resolve) => this.held.push(resolve))
    return this.inner.batch(ops)
  }
}

let site: MemorySite | undefined
afterEach(async () => {
  await site?.close()
  site = undefined
})

describe('the first full sync', () => {
  it('resolves whenReady() only once the offline-ready record is durable', async () => {
    const clock = new ManualClock()
    site = await memorySite(clock)
    for (let i = 0; i < 50; i++) await site.server.users.put({ id: `u${i}`, name: `User ${i}` })
    const store = new RecordHoldingStore(memoryStore())
    const device = await site.device('D1', clock, { store })
    store.armed = true
    let ready = false
    const whenReady = device.sync.whenReady().then(() => {
      ready = true
    })
    // The roster arrives; the record's write is held.
    for (let i = 0; i < 50 && store.held.length === 0; i++) await settle()
    expect(store.held.length).toBeGreaterThan(0)
    await settle(20)
    expect(device.users.list()).toHaveLength(50)
    expect(ready).toBe(false)
    store.armed = false
    for (const release of store.held.splice(0)) release()
    await whenReady
    expect(device.sync.status().offlineReady).toBe(true)
  })
})
