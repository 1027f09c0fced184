/**
 * The virtual-time scheduler: (time, insertion) order, cancellation, runs
 * bounded by time, predicate or event count, continuations settled between
 * events, per-peer skewed views, and determinism of a random async workload.
 * Replay the random test with `ROSTERSYNC_SEED=<seed> npx vitest run test/sim-scheduler.test.ts`.
 */
import { describe, expect, it } from 'vitest'
import { hasCode } from '../core/errors.js'
import { Prng } from '../sim/prng.js'
import { realTurnEvents, Scheduler, simStartMs } from '../sim/scheduler.js'

const envSeed = process.env.ROSTERSYNC_SEED
const seed =
  envSeed === undefined || envSeed === ''
    ? (Date.now() ^ (Math.random() * 0x7fffffff)) >>> 0
    : Number(envSeed)
console.log(
  `sim-scheduler: seed ${seed} — replay: ROSTERSYNC_SEED=${seed} npx vitest run test/sim-scheduler.test.ts`,
)

/** An async chain `depth` continuations long, as a peer's awaits make. */
async function chain(depth: number): Promise<void> {
  for (let i = 0; i < depth; i++) await Promise.resolve()
}

describe('Scheduler', () => {
  it('starts at simStartMs (or startMs) and runs events by time, then by insertion', async () => {
    expect(new Scheduler().now()).toBe(simStartMs)
    const s = new Scheduler({ startMs: 0 })
    const order: string[] = []
    s.setTimeout(() => order.push('b@10'), 10)
    s.setTimeout(() => order.push('a@5'), 5)
    s.setTimeout(() => order.push('c@10'), 10)
    s.setTimeout(() => order.push('d@0'), 0)
    s.setTimeout(() => order.push('e@neg'), -5)
    s.setTimeout(() => order.push('f@nan'), Number.NaN)
    const result = await s.runUntil(() => false)
    expect(order).toEqual(['d@0', 'e@neg', 'f@nan', 'a@5', 'b@10', 'c@10'])
    expect(result).toEqual({ reason: 'idle', events: 6, now: 10 })
    expect(s.eventsRun).toBe(6)
  })

  it('cancels with clearTimeout, ignoring unknown and spent handles', async () => {
    const s = new Scheduler({ startMs: 0 })
    const ran: number[] = []
    const handles = [1, 2, 3].map((n) => s.setTimeout(() => ran.push(n), n))
    s.clearTimeout(handles[1])
    s.clearTimeout(handles[1])
    s.clearTimeout('not a handle')
    s.clearTimeout(undefined)
    expect(s.pending).toBe(2)
    expect(s.nextEventTime()).toBe(1)
    await s.runUntil(() => false)
    s.clearTimeout(handles[0])
    expect(ran).toEqual([1, 3])
    expect(s.pending).toBe(0)
  })

  it('runUntil(time) runs events up to and including that time, then reads exactly it', async () => {
    const s = new Scheduler({ startMs: 100 })
    const ran: number[] = []
    for (const at of [5, 10, 11]) s.setTimeout(() => ran.push(s.now()), at)
    expect(await s.runUntil(110)).toEqual({ reason: 'reached', events: 2, now: 110 })
    expect(ran).toEqual([105, 110])
    expect(await s.runFor(50)).toEqual({ reason: 'reached', events: 1, now: 160 })
    expect(await s.runFor(1000)).toEqual({ reason: 'reached', events: 0, now: 1160 })
  })

  it('lets every continuation of an event run, at its time, before the next event', async () => {
    const s = new Scheduler({ startMs: 0 })
    const log: string[] = []
    s.setTimeout(() => {
      void chain(200).then(() => {
        log.push(`deep continuation at ${s.now()}`)
        // Scheduled from a continuation: after events already queued for now.
        s.setTimeout(() => log.push('timer from continuation'), 0)
      })
    }, 1)
    s.setTimeout(() => log.push(`next event at ${s.now()}`), 1)
    await s.runUntil(() => false)
    expect(log).toEqual(['deep continuation at 1', 'next event at 1', 'timer from continuation'])
  })

  it('settles what its caller set off before the first event, even when called from a macrotask', async () => {
    // A swarm worker starts each run from its message handler: continuations
    // queued there must run before the first event, as they do when a run
    // starts from a continuation (the main thread's CLI).
    const s = new Scheduler({ startMs: 0 })
    const log: string[] = []
    s.setTimeout(() => log.push('first event'), 1)
    await new Promise<void>((resolve, reject) =>
      setImmediate(() => {
        void chain(200).then(() => log.push('caller continuation'))
        s.runUntil(() => false).then(() => resolve(), reject)
      }),
    )
    expect(log).toEqual(['caller continuation', 'first event'])
  })

  it('gives the event loop a turn every realTurnEvents events of a long run', async () => {
    const s = new Scheduler({ startMs: 0 })
    const total = realTurnEvents * 3
    for (let i = 1; i <= total; i++) s.setTimeout(() => undefined, i)
    const turns: number[] = []
    const watch = (): void => {
      turns.push(s.eventsRun)
      if (s.eventsRun < total) setImmediate(watch)
    }
    setImmediate(watch)
    await s.runUntil(() => false)
    // The loop turned within the run, at the bound, not only once it ended.
    expect(turns).toContain(realTurnEvents)
    expect(turns).toContain(realTurnEvents * 2)
  })

  it('runUntil(predicate) checks before the first event and after each one', async () => {
    const s = new Scheduler({ startMs: 0 })
    let count = 0
    for (let i = 1; i <= 10; i++) s.setTimeout(() => count++, i)
    expect(await s.runUntil(() => true)).toEqual({ reason: 'reached', events: 0, now: 0 })
    expect(await s.runUntil(() => count === 3)).toEqual({ reason: 'reached', events: 3, now: 3 })
    expect(await s.runUntil(() => false, { maxEvents: 4 })).toEqual({
      reason: 'maxEvents',
      events: 4,
      now: 7,
    })
    expect(await s.step()).toBe(true)
    expect(count).toBe(8)
  })

  it('runUntil stops a burst: more events within a window of virtual time than the bound', async () => {
    const burst = { events: 100, withinMs: 1_000 }
    // A livelock: an event that schedules itself again at once, forever.
    const s = new Scheduler({ startMs: 0 })
    const spin = (): void => void s.setTimeout(spin, 0)
    s.setTimeout(spin, 5)
    expect(await s.runUntil(() => false, { burst })).toEqual({
      reason: 'burst',
      events: 100,
      now: 5,
    })
    // A steady pace within the bound (50 events a window) runs on, for as long as asked.
    const t = new Scheduler({ startMs: 0 })
    const tick = (): void => void t.setTimeout(tick, 20)
    t.setTimeout(tick, 0)
    expect(await t.runUntil(60_000, { burst })).toEqual({
      reason: 'reached',
      events: 3_001,
      now: 60_000,
    })
  })

  it('rejects a step whose event throws, consumes the event and stays usable', async () => {
    const s = new Scheduler({ startMs: 0 })
    s.setTimeout(() => {
      throw new Error('boom')
    }, 1)
    s.setTimeout(() => undefined, 2)
    await expect(s.step()).rejects.toThrow('boom')
    expect(await s.step()).toBe(true)
    expect(await s.step()).toBe(false)
  })

  it('allows one driver at a time', async () => {
    const s = new Scheduler({ startMs: 0 })
    s.setTimeout(() => undefined, 1)
    const running = s.runUntil(() => false)
    let error: unknown
    try {
      await s.step()
    } catch (caught) {
      error = caught
    }
    expect(hasCode(error, 'INVALID_OPTIONS')).toBe(true)
    await running
  })

  it('gives each peer a skewed view on the same queue, and halt() silences a dead peer', async () => {
    const s = new Scheduler({ startMs: 1000 })
    const ahead = s.clock(500)
    const behind = s.clock(-300)
    expect([ahead.now(), behind.now()]).toEqual([1500, 700])
    const fired: string[] = []
    ahead.setTimeout(() => fired.push(`ahead at ${s.now()}`), 10)
    behind.setTimeout(() => fired.push(`behind at ${s.now()}`), 10)
    behind.setTimeout(() => fired.push('never'), 20)
    const cancelled = ahead.setTimeout(() => fired.push('cancelled'), 5)
    behind.clearTimeout(cancelled)
    expect([ahead.pendingTimers, behind.pendingTimers]).toEqual([1, 2])
    await s.runUntil(1010)
    expect(behind.pendingTimers).toBe(1)
    expect(behind.halt()).toBe(1)
    expect(behind.setTimeout(() => fired.push('after halt'), 1)).toBeUndefined()
    ahead.skewMs = -1
    expect(ahead.now()).toBe(1009)
    await s.runUntil(() => false)
    expect(fired).toEqual(['ahead at 1010', 'behind at 1010'])
    expect(behind.halted).toBe(true)
  })

  it('autoRun runs events as they are scheduled, until stopped', async () => {
    const s = new Scheduler({ startMs: 0 })
    const auto = s.autoRun()
    const fired = await new Promise<number>((resolve) => s.setTimeout(() => resolve(s.now()), 25))
    expect(fired).toBe(25)
    await auto.stop()
    s.setTimeout(() => undefined, 1)
    expect(s.pending).toBe(1)
  })

  it('autoRun reports an event that threw from stop()', async () => {
    const s = new Scheduler({ startMs: 0 })
    const auto = s.autoRun()
    s.setTimeout(() => {
      throw new Error('event failed')
    }, 1)
    await new Promise((resolve) => setImmediate(resolve))
    await new Promise((resolve) => setImmediate(resolve))
    await expect(auto.stop()).rejects.toThrow('event failed')
    // The failed loop released the scheduler.
    expect(await s.step()).toBe(false)
  })

  it('runs a random async workload identically twice (the trace is a function of the seed)', async () => {
    const run = async (): Promise<string[]> => {
      const rng = new Prng(seed)
      const s = new Scheduler({ startMs: 0 })
      const trace: string[] = []
      const actor = (name: string, budget: { left: number }): void => {
        if (budget.left-- <= 0) return
        trace.push(`${name}@${s.now()}`)
        const depth = rng.int(0, 30)
        void chain(depth).then(() => {
          trace.push(`${name}+${depth}@${s.now()}`)
          s.setTimeout(() => actor(name, budget), rng.int(0, 5))
        })
        if (rng.chance(0.3)) s.setTimeout(() => actor(`${name}'`, { left: 3 }), rng.int(0, 5))
      }
      for (const name of ['a', 'b', 'c']) s.setTimeout(() => actor(name, { left: 40 }), 0)
      await s.runUntil(() => false)
      return trace
    }
    const first = await run()
    expect(first.length).toBeGreaterThan(100)
    expect(await run()).toEqual(first)
  })
})
