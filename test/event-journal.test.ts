/**
 * The replica's event journal (peers/replica/event-journal.ts): loaded while
 * the snapshot is read (issue 13, cold start), failing as either does, the
 * document installed before the journal's failure is told (a rollback puts
 * the durable document back even then).
 */
import { describe, expect, it } from 'vitest'
import { EVENT_TYPES } from '../core/events.js'
import type { RangeOptions, Store, StoreOp } from '../core/store.js'
import { EventJournal } from '../peers/replica/event-journal.js'
import { memoryStore } from '../storage/level-store.js'

/** A store holding one journal chunk of one event. */
async function storeWithOneEvent(): Promise<Store> {
  const store = memoryStore()
  const writer = new EventJournal(100)
  writer.append({ type: EVENT_TYPES[0], userId: 'u1' }, 1)
  const ops: StoreOp[] = []
  writer.writeEventChunk(ops)
  await store.batch(ops)
  return store
}

describe('EventJournal.loadBeside', () => {
  it('loads the journal while the work runs, then installs the work value', async () => {
    const store = await storeWithOneEvent()
    const journal = new EventJournal(100)
    let release: (value: string) => void = () => undefined
    const work = new Promise<string>((resolve) => (release = resolve))
    const installed: string[] = []
    const loading = journal.loadBeside(store, work, async (value) => {
      installed.push(value)
    })
    // The journal is read while the work has not finished.
    for (let i = 0; i < 20 && journal.events.size === 0; i++)
      await new Promise((resolve) => setTimeout(resolve, 1))
    expect(journal.events.size).toBe(1)
    expect(installed).toEqual([])
    release('doc')
    await loading
    expect(installed).toEqual(['doc'])
    await store.close()
  })

  it("rejects with the work's failure once the journal is read, installing nothing", async () => {
    const store = await storeWithOneEvent()
    const journal = new EventJournal(100)
    const installed: unknown[] = []
    await expect(
      journal.loadBeside(store, Promise.reject(new Error('snapshot')), async (value) => {
        installed.push(value)
      }),
    ).rejects.toThrow('snapshot')
    expect(journal.events.size).toBe(1)
    expect(installed).toEqual([])
    await store.close()
  })

  it("installs the work's value, then rejects with the journal's failure", async () => {
    const store = memoryStore()
    const failing: Store = {
      get: (key) => store.get(key),
      put: (key, value) => store.put(key, value),
      del: (key) => store.del(key),
      batch: (ops) => store.batch(ops),
      close: () => store.close(),
      range: (options: RangeOptions) => ({
        [Symbol.asyncIterator]: () => ({
          next: () => Promise.reject(new Error(`range ${options.gte} failed`)),
        }),
      }),
    }
    const journal = new EventJournal(100)
    const installed: string[] = []
    await expect(
      journal.loadBeside(failing, Promise.resolve('doc'), async (value) => {
        installed.push(value)
      }),
    ).rejects.toThrow('range e/ failed')
    expect(installed).toEqual(['doc'])
    await store.close()
  })
})
