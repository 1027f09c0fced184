/**
 * What a device shows while a full sync fetches the roster (SEMANTICS.md,
 * "Sync lifecycle": push, clear, fetch). The clear is staged: the store
 * keeps the roster until the fetched one replaces it in one batch, and
 * readers keep it too. Before, the document was emptied for the length of
 * the fetch and `users.get` / `users.list` found no user (a black-box
 * probe: 3,000 users gone for 50-150 ms, every badge refused meanwhile).
 */
import { afterEach, describe, expect, it } from 'vitest'
import { ManualClock } from './helpers/manual-clock.js'
import { memorySite, type MemorySite } from './helpers/memory-site.js'

let site: MemorySite | undefined
afterEach(async () => {
  await site?.close()
  site = undefined
})

describe('a full sync', () => {
  it('shows the roster as it was until the fetched one replaces it, a local delete included', async () => {
    const clock = new ManualClock()
    site = await memorySite(clock)
    for (const [id, name] of [
      ['A', 'Ann'],
      ['B', 'Bob'],
      ['C', 'Cat'],
    ])
      await site.server.users.put({ id, name })
    const device = await site.device('D1', clock, { mode: 'periodic' })
    await device.sync.whenReady()
    await device.users.delete('B')
    await site.server.users.patch('C', { phone: '555' })
    const before = device.users.list().map((view) => view.id)
    expect(before).toEqual(['A', 'C'])

    // Read at each moment the device's document is replaced or changes
    // during the sync: the staged clear, each batch of the fetch.
    const seen: string[][] = []
    const named: Array<string | undefined> = []
    const read = (): void => {
      seen.push(device.users.list().map((view) => view.id))
      named.push(device.users.get('A')?.name as string | undefined)
    }
    const stopReset = device.replica.onReset(read)
    const stopUpdate = device.replica.onUpdate(read)
    try {
      await device.sync.full()
    } finally {
      stopReset()
      stopUpdate()
    }
    expect(seen.length).toBeGreaterThan(1)
    // Until the commit, the roster as it was (B hidden: deleted here); never empty.
    for (const ids of seen) expect([before, ['A', 'B', 'C']]).toContainEqual(ids)
    expect(seen[0]).toEqual(before)
    expect(new Set(named)).toEqual(new Set(['Ann']))
    // After it, the fetched roster: B shows again (rule 3), C with the server's change.
    expect(device.users.list().map((view) => view.id)).toEqual(['A', 'B', 'C'])
    expect(device.users.get('C')?.phone).toBe('555')
  })
})
