/**
 * The simulator's store: the Store contract (durable at once, and with
 * writes flushed on a virtual clock), then the crash model: acknowledged
 * writes survive, in-flight ones are lost but for a prefix in call order,
 * a torn write leaves a prefix of its operations, a crashed handle goes
 * silent, and a disk can be restored from an old backup.
 * Replay the random test with `ROSTERSYNC_SEED=<seed> npx vitest run test/sim-store.test.ts`.
 */
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { hasCode } from '../core/errors.js'
import type { Store, StoreOp } from '../core/store.js'
import { Prng } from '../sim/prng.js'
import { Scheduler, settle } from '../sim/scheduler.js'
import { SimDisk, simStore, type SimStore } from '../sim/sim-store.js'
import { runStoreContract, type StoreFixture } from './contracts/store.contract.js'

const envSeed = process.env.ROSTERSYNC_SEED
const seed =
  envSeed === undefined || envSeed === ''
    ? (Date.now() ^ (Math.random() * 0x7fffffff)) >>> 0
    : Number(envSeed)
console.log(
  `sim-store: seed ${seed} — replay: ROSTERSYNC_SEED=${seed} npx vitest run test/sim-store.test.ts`,
)

const bytes = (...values: number[]): Uint8Array => new Uint8Array(values)

async function immediateFixture(): Promise<StoreFixture> {
  const store = simStore()
  const opened: Store[] = [store]
  return {
    store,
    reopen: async () => {
      const again = store.disk.open()
      opened.push(again)
      return again
    },
    cleanup: async () => {
      for (const each of opened) await each.close()
    },
  }
}

/** Writes flush 0-3 virtual ms after the call, on a scheduler run in the background. */
async function clockedFixture(): Promise<StoreFixture> {
  const scheduler = new Scheduler()
  const auto = scheduler.autoRun()
  const rng = new Prng(1)
  const options = { clock: scheduler.clock(), flushDelayMs: () => rng.int(0, 3) }
  const disk = new SimDisk()
  const opened: Store[] = [disk.open(options)]
  return {
    store: opened[0] as Store,
    reopen: async () => {
      const again = disk.open(options)
      opened.push(again)
      return again
    },
    cleanup: async () => {
      for (const each of opened) await each.close()
      await auto.stop()
    },
  }
}

runStoreContract('SimStore, durable at the call', immediateFixture)
runStoreContract('SimStore, flushed on a virtual clock', clockedFixture)

/** A store whose writes flush `flushDelayMs` after the call on `scheduler`. */
function clocked(flushDelayMs: number | (() => number) = 5): {
  scheduler: Scheduler
  store: SimStore
} {
  const scheduler = new Scheduler({ startMs: 0 })
  return { scheduler, store: simStore({ clock: scheduler.clock(), flushDelayMs }) }
}

/** Tracks whether a promise has settled. */
function track(promise: Promise<unknown>): { settled: boolean } {
  const state = { settled: false }
  promise.then(
    () => (state.settled = true),
    () => (state.settled = true),
  )
  return state
}

const put = (key: string, ...values: number[]): StoreOp => ({
  type: 'put',
  key,
  value: bytes(...values),
})

describe('SimStore crash model', () => {
  it('makes a write visible and acknowledged only when its flush has run', async () => {
    const { scheduler, store } = clocked(5)
    const write = track(store.put('k', bytes(1)))
    await settle()
    expect(write.settled).toBe(false)
    expect(await store.get('k')).toBeUndefined()
    expect(store.inFlight).toBe(1)
    await scheduler.runUntil(5)
    expect(write.settled).toBe(true)
    expect(await store.get('k')).toEqual(bytes(1))
  })

  it('keeps every acknowledged write and loses the in-flight ones', async () => {
    const { scheduler, store } = clocked(5)
    await Promise.all([store.put('a', bytes(1)), scheduler.runUntil(5)])
    const late = [track(store.put('b', bytes(2))), track(store.del('a'))]
    await scheduler.runUntil(9)
    expect(store.crash()).toEqual({ inFlight: 2, survived: 0, lost: 2, tornOps: 0 })
    await scheduler.runUntil(() => false)
    expect(late.map((w) => w.settled)).toEqual([false, false])
    const again = store.disk.open()
    expect(await again.get('a')).toEqual(bytes(1))
    expect(await again.get('b')).toBeUndefined()
    expect(store.disk.stats).toMatchObject({ writes: 1, crashes: 1, lostWrites: 2, tornWrites: 0 })
  })

  it('makes writes durable in call order, whatever their flush delays', async () => {
    const delays = [9, 1, 5, 0]
    const { scheduler, store } = clocked(() => delays.shift() ?? 0)
    const done: string[] = []
    for (const key of ['a', 'b', 'c', 'd']) {
      void store.put(key, bytes(1)).then(() => done.push(`${key}@${scheduler.now()}`))
    }
    await scheduler.runUntil(() => false)
    expect(done).toEqual(['a@9', 'b@9', 'c@9', 'd@9'])
  })

  it('keeps a prefix of the in-flight writes when asked, and can tear the next one', async () => {
    const { store } = clocked(5)
    void store.put('a', bytes(1))
    void store.batch([put('b', 2), put('c', 3), put('d', 4)])
    void store.put('e', bytes(5))
    expect(store.crash({ survivingWrites: 1, tornOps: 2 })).toEqual({
      inFlight: 3,
      survived: 1,
      lost: 2,
      tornOps: 2,
    })
    expect(store.disk.entries().map(([key]) => key)).toEqual(['a', 'b', 'c'])
    expect(store.disk.stats.tornWrites).toBe(1)
  })

  it('never tears a whole write (a write that fully landed survived) and clamps counts', async () => {
    const { store } = clocked(5)
    void store.batch([put('a', 1), put('b', 2)])
    expect(store.crash({ survivingWrites: 7, tornOps: 9 })).toEqual({
      inFlight: 1,
      survived: 1,
      lost: 0,
      tornOps: 0,
    })
    const other = clocked(5).store
    void other.batch([put('a', 1), put('b', 2)])
    expect(other.crash({ tornOps: 9 }).tornOps).toBe(1)
  })

  it('after a random crash, the disk holds the acknowledged writes plus a prefix of the rest', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.array(fc.constantFrom('a', 'b', 'c', 'd'), { minLength: 1, maxLength: 4 }), {
          minLength: 1,
          maxLength: 12,
        }),
        fc.nat({ max: 20 }),
        fc.integer(),
        fc.boolean(),
        async (writes, crashAtMs, crashSeed, torn) => {
          const rng = new Prng(crashSeed)
          const { scheduler, store } = clocked(() => rng.int(0, 4))
          // Each write puts its index under its keys, so the disk shows which landed.
          const acked: boolean[] = writes.map(() => false)
          writes.forEach((keys, i) => {
            const start = i * 2
            scheduler.setTimeout(() => {
              void store.batch(keys.map((key) => put(key, i))).then(() => (acked[i] = true))
            }, start)
          })
          await scheduler.runUntil(crashAtMs)
          const called = writes.filter((_, i) => i * 2 <= crashAtMs).length
          const report = store.crash({ rng, torn })
          await settle()
          const model = new Map<string, number>()
          const landed = called - report.inFlight + report.survived
          writes.slice(0, landed).forEach((keys, i) => keys.forEach((key) => model.set(key, i)))
          writes[landed]?.slice(0, report.tornOps).forEach((key) => model.set(key, landed))
          expect(acked.filter(Boolean).length).toBe(called - report.inFlight)
          expect(acked.slice(0, called - report.inFlight).every(Boolean)).toBe(true)
          expect(new Map(store.disk.entries().map(([key, [v]]) => [key, v]))).toEqual(model)
          if (!torn) expect(report.tornOps).toBe(0)
        },
      ),
      { seed },
    )
  })

  it('silences a crashed handle: reads and writes never settle; close and crash are no-ops', async () => {
    const { scheduler, store } = clocked(1)
    await Promise.all([store.put('a', bytes(1)), scheduler.runUntil(1)])
    store.crash()
    const calls = [
      track(store.get('a')),
      track(store.put('b', bytes(2))),
      track(store.del('a')),
      track(store.batch([put('c', 3)])),
      track((async () => store.range({ gte: '', lt: '~' })[Symbol.asyncIterator]().next())()),
    ]
    await store.close()
    expect(store.crash()).toEqual({ inFlight: 0, survived: 0, lost: 0, tornOps: 0 })
    await scheduler.runUntil(() => false)
    await settle()
    expect(calls.map((c) => c.settled)).toEqual([false, false, false, false, false])
    expect(store.disk.entries()).toEqual([['a', bytes(1)]])
  })

  it('locks the disk to one open store; a crash or close releases it', async () => {
    const disk = new SimDisk()
    const first = disk.open()
    expect(disk.inUse).toBe(true)
    expect(() => disk.open()).toThrow(/in use/)
    first.crash()
    const second = disk.open()
    await second.close()
    expect(disk.inUse).toBe(false)
    await disk.open().close()
  })

  it('completes in-flight writes on a clean close', async () => {
    const { store } = clocked(50)
    const write = store.put('k', bytes(7))
    await store.close()
    await write
    expect(store.disk.entries()).toEqual([['k', bytes(7)]])
    let error: unknown
    await store.get('k').catch((caught: unknown) => (error = caught))
    expect(hasCode(error, 'STORE_CLOSED')).toBe(true)
  })

  it('restores a device from an old backup of its data directory', async () => {
    const store = simStore()
    await store.put('a', bytes(1))
    const backup = store.disk.snapshot()
    await store.put('a', bytes(2))
    await store.put('b', bytes(3))
    expect(backup.keys).toBe(1)
    expect(() => store.disk.restore(backup)).toThrow(/open/)
    await store.close()
    store.disk.restore(backup)
    const restored = store.disk.open()
    expect(store.disk.entries()).toEqual([['a', bytes(1)]])
    // The backup is a copy: writing after a restore leaves it as it was.
    await restored.put('c', bytes(4))
    expect(new SimDisk(backup).entries()).toEqual([['a', bytes(1)]])
    await restored.close()
  })
})
