/**
 * Virtual time for the simulator. One queue of events ordered by (virtual
 * time, insertion sequence), so that a run is a pure function of what was
 * scheduled: two events at the same millisecond always run in the order they
 * were scheduled. Peers see it through the {@link Clock} interface, either
 * directly or through a {@link PeerClock} view with its own skew.
 *
 * Peers are asynchronous (promises), so after every event the scheduler lets
 * all the promise continuations that event set off run before the next
 * event: in virtual time, a continuation takes no time. See {@link settle}.
 */
import type { Clock } from '../core/clock.js'
import { InvalidOptionsError } from '../core/errors.js'

/** Where virtual time starts unless told otherwise: 2023-11-14T22:13:20Z, a plausible "now". */
export const simStartMs = 1_700_000_000_000

/** Most events one `runUntil` runs unless told otherwise: a bound on a livelocked run. */
export const runEventsMaxDefault = 10_000_000

/**
 * Lets every pending promise continuation run, however deep the chain.
 *
 * This is why the simulator stays deterministic: V8 drains the whole
 * microtask queue (including microtasks queued by microtasks) before Node
 * runs its `process.nextTick` queue, and a tick queued from inside a
 * microtask (the `then` below) therefore runs only once every continuation
 * the last event set off has run, in the deterministic order the microtask
 * queue imposes. Then the continuation of the caller runs. Nothing here
 * reads a clock or waits for the event loop: as long as no real I/O or real
 * timer is involved (peers get their time from the virtual clock, their
 * disk and network from the simulator), nothing else can run in between.
 *
 * The tick is queued from a microtask, never directly: a tick queued by a
 * macrotask's own code (a worker thread's message handler starting a run)
 * would run before that macrotask's microtasks, not after. The same seed
 * gives the same trace in a worker and in the main thread (checked in
 * test/sim-scheduler.test.ts). A tick costs a fraction of a microsecond;
 * the `setImmediate` turn this used to take cost 2.5 µs and, with the
 * event loop's own bookkeeping, 7-18% of a simulation's CPU (33,000
 * events a seed). See {@link settleTurn} for the event loop's turn.
 */
export function settle(): Promise<void> {
  return Promise.resolve().then(afterMicrotasks)
}

const afterMicrotasks = (): Promise<void> => new Promise((resolve) => process.nextTick(resolve))

/**
 * Lets every pending continuation run, then one turn of the real event loop
 * (pending I/O callbacks, signals, a worker's messages). What
 * {@link Scheduler.autoRun} waits for after each event (its tests wait in
 * real time, for real sockets and disks), and what {@link Scheduler.runUntil}
 * gives the process every {@link realTurnEvents} events: nothing of a
 * simulation may wait for it (peers yield through their injected clock, as
 * server-peer/generations.ts does), so where it falls changes no run.
 */
export function settleTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve))
}

/**
 * Events {@link Scheduler.runUntil} runs between two turns of the real event
 * loop: a run of millions of events still lets Ctrl-C, a worker's
 * `terminate` and the progress output through. The turn is also when Node
 * reports a promise rejection nothing handled (only with the tick queue
 * empty): one left unhandled for this many events is reported, as it was
 * after one event when every event took a turn (a review). A turn costs
 * about 3 µs.
 */
export const realTurnEvents = 100

/** A scheduled event; also the opaque handle `setTimeout` returns. */
class SimEvent {
  /** Ran or cancelled: a spent handle, and skipped if still in the heap. */
  done = false
  constructor(
    readonly time: number,
    readonly seq: number,
    readonly fn: () => void,
    readonly owner: PeerClock | undefined,
  ) {}
}

/** What one event looked like, for a trace hook. */
export interface EventInfo {
  /** Virtual time at which it ran. */
  readonly time: number
  /** Its insertion sequence number (unique within the scheduler). */
  readonly seq: number
}

/** Bounds of a run. */
export interface RunOptions {
  /** Stop after this many events (default {@link runEventsMaxDefault}). */
  readonly maxEvents?: number
  /**
   * Stop when more than `events` run within `withinMs` of virtual time (a
   * livelock: peers busy with each other while virtual time stands
   * still). Counted in consecutive windows: a window starts at the first
   * event more than `withinMs` after the start of the one before.
   */
  readonly burst?: { readonly events: number; readonly withinMs: number }
}

/** How a run ended. */
export interface RunResult {
  /**
   * `reached`: the predicate held, or virtual time reached the target;
   * `idle`: no event was left (the predicate never held);
   * `maxEvents`: the event bound stopped it first;
   * `burst`: more events ran within one window of virtual time than the burst bound allows.
   */
  readonly reason: 'reached' | 'idle' | 'maxEvents' | 'burst'
  /** Events this run executed. */
  readonly events: number
  /** Virtual time when it stopped. */
  readonly now: number
}

/** A background run started by {@link Scheduler.autoRun}. */
export interface AutoRun {
  /** Stops after the current event; rejects with the error of an event that threw. */
  stop(): Promise<void>
}

/** Options of the {@link Scheduler} constructor. */
export interface SchedulerOptions {
  /** Virtual epoch milliseconds at the start (default {@link simStartMs}). */
  readonly startMs?: number
}

/**
 * The virtual-time event queue and the master {@link Clock}. Nothing runs on
 * its own: a driver calls {@link step} or {@link runUntil} (or, for tests
 * that wait in real time, {@link autoRun}).
 */
export class Scheduler implements Clock {
  #now: number
  #seq = 0
  #eventsRun = 0
  #live = 0
  /** Binary min-heap on (time, seq); cancelled events stay (marked done) until popped. */
  readonly #heap: SimEvent[] = []
  #running = false
  #wake: (() => void) | undefined
  /** Called before each event runs, e.g. to hash the run into a trace. */
  onEvent: ((event: EventInfo) => void) | undefined

  constructor(options: SchedulerOptions = {}) {
    this.#now = options.startMs ?? simStartMs
    if (!Number.isFinite(this.#now)) {
      throw new InvalidOptionsError(`startMs must be finite, got ${this.#now}`)
    }
  }

  /** Current virtual time, in epoch milliseconds. */
  now(): number {
    return this.#now
  }

  /** Runs `fn` after `ms` virtual milliseconds (negative or NaN count as 0). */
  setTimeout(fn: () => void, ms: number): unknown {
    return this.schedule(fn, ms, undefined)
  }

  /** Cancels an event; unknown, fired or already cancelled handles are ignored. */
  clearTimeout(handle: unknown): void {
    if (!(handle instanceof SimEvent) || handle.done) return
    handle.done = true
    this.#live--
    handle.owner?.forget(handle)
  }

  /**
   * A view of this clock for one peer: its `now()` is off by `skewMs`
   * (changeable later), its timers share this queue, and {@link PeerClock.halt}
   * cancels them all when the peer crashes.
   */
  clock(skewMs = 0): PeerClock {
    return new PeerClock(this, skewMs)
  }

  /** Events scheduled and neither run nor cancelled. */
  get pending(): number {
    return this.#live
  }

  /** Events run so far. */
  get eventsRun(): number {
    return this.#eventsRun
  }

  /** Virtual time of the next live event, or `undefined` when there is none. */
  nextEventTime(): number | undefined {
    return this.#peekLive()?.time
  }

  /** @internal Schedules `fn` after `ms` on behalf of `owner` (a {@link PeerClock}); returns the handle. */
  schedule(fn: () => void, ms: number, owner: PeerClock | undefined): unknown {
    const delay = ms > 0 ? ms : 0 // also maps NaN to 0, as Node does
    const event = new SimEvent(this.#now + delay, this.#seq++, fn, owner)
    this.#push(event)
    this.#live++
    if (this.#wake !== undefined) {
      const wake = this.#wake
      this.#wake = undefined
      wake()
    }
    return event
  }

  /**
   * Runs the next event, then lets its continuations settle. Resolves to
   * false (running nothing) when no event is pending. An event that throws
   * rejects this call; the event is consumed either way.
   */
  async step(): Promise<boolean> {
    this.#enter()
    try {
      return await this.#stepInside(settle)
    } finally {
      this.#running = false
    }
  }

  /**
   * Runs events until `stop` holds: a predicate, checked once everything has
   * settled before the first event and after every event; or a virtual time,
   * in which case every event up to and including that time runs and the
   * clock then reads exactly that time.
   */
  async runUntil(stop: number | (() => boolean), options: RunOptions = {}): Promise<RunResult> {
    const maxEvents = options.maxEvents ?? runEventsMaxDefault
    const burst = options.burst
    let windowStart = -Infinity
    let windowEvents = 0
    this.#enter()
    try {
      await settle()
      let events = 0
      for (;;) {
        if (typeof stop === 'function' && stop()) return this.#result('reached', events)
        const next = this.#peekLive()
        if (typeof stop === 'number' && (next === undefined || next.time > stop)) {
          if (stop > this.#now) this.#now = stop
          return this.#result('reached', events)
        }
        if (next === undefined) return this.#result('idle', events)
        if (events >= maxEvents) return this.#result('maxEvents', events)
        if (burst !== undefined) {
          if (next.time - windowStart > burst.withinMs) {
            windowStart = next.time
            windowEvents = 0
          }
          if (windowEvents >= burst.events) return this.#result('burst', events)
          windowEvents++
        }
        await this.#stepInside(settle)
        events++
        if (events % realTurnEvents === 0) await settleTurn()
      }
    } finally {
      this.#running = false
    }
  }

  /** Runs every event of the next `ms` virtual milliseconds; see {@link runUntil}. */
  runFor(ms: number, options: RunOptions = {}): Promise<RunResult> {
    return this.runUntil(this.#now + ms, options)
  }

  /**
   * Runs events as they come, as fast as possible, until `stop()`. For tests
   * that wait in real time (the transport and store contract suites). A
   * periodic timer keeps it busy forever; simulations use {@link runUntil}.
   */
  autoRun(): AutoRun {
    this.#enter()
    let stopped = false
    const loop = async (): Promise<void> => {
      try {
        while (!stopped) {
          if (this.#peekLive() === undefined) {
            await new Promise<void>((resolve) => (this.#wake = resolve))
          } else {
            await this.#stepInside(settleTurn)
          }
        }
      } finally {
        this.#running = false
      }
    }
    const done = loop()
    // The error, if any, is reported by stop(); until then it must not
    // count as an unhandled rejection.
    done.catch(() => undefined)
    return {
      stop: async () => {
        stopped = true
        const wake = this.#wake
        this.#wake = undefined
        wake?.()
        await done
      },
    }
  }

  /** Runs the next event, then waits with `wait` for what it set off. */
  async #stepInside(wait: () => Promise<void>): Promise<boolean> {
    const event = this.#popLive()
    if (event === undefined) return false
    event.done = true
    this.#now = event.time
    this.#live--
    this.#eventsRun++
    event.owner?.forget(event)
    this.onEvent?.({ time: event.time, seq: event.seq })
    event.fn()
    await wait()
    return true
  }

  #enter(): void {
    if (this.#running) {
      throw new InvalidOptionsError('the scheduler is already running (one driver at a time)')
    }
    this.#running = true
  }

  #result(reason: RunResult['reason'], events: number): RunResult {
    return { reason, events, now: this.#now }
  }

  #peekLive(): SimEvent | undefined {
    const heap = this.#heap
    while (heap.length > 0 && (heap[0] as SimEvent).done) this.#pop()
    return heap[0]
  }

  #popLive(): SimEvent | undefined {
    return this.#peekLive() === undefined ? undefined : this.#pop()
  }

  #push(event: SimEvent): void {
    const heap = this.#heap
    let i = heap.length
    heap.push(event)
    while (i > 0) {
      const parent = (i - 1) >> 1
      const up = heap[parent] as SimEvent
      if (!before(event, up)) break
      heap[i] = up
      i = parent
    }
    heap[i] = event
  }

  #pop(): SimEvent | undefined {
    const heap = this.#heap
    const top = heap[0]
    const last = heap.pop()
    if (top === undefined || last === undefined || heap.length === 0) return top
    let i = 0
    const n = heap.length
    for (;;) {
      const left = 2 * i + 1
      if (left >= n) break
      const right = left + 1
      const child =
        right < n && before(heap[right] as SimEvent, heap[left] as SimEvent) ? right : left
      const down = heap[child] as SimEvent
      if (!before(down, last)) break
      heap[i] = down
      i = child
    }
    heap[i] = last
    return top
  }
}

function before(x: SimEvent, y: SimEvent): boolean {
  return x.time < y.time || (x.time === y.time && x.seq < y.seq)
}

/**
 * One peer's view of the scheduler: the same queue and the same virtual
 * time, read through a skew (its wall clock is off by `skewMs`). Timers are
 * relative, so skew changes what `now()` reads, never when a timer fires.
 */
export class PeerClock implements Clock {
  /** How far this peer's clock is ahead of virtual time (negative: behind), in ms. */
  skewMs: number
  readonly #scheduler: Scheduler
  readonly #timers = new Set<unknown>()
  #halted = false

  /** Use {@link Scheduler.clock}. */
  constructor(scheduler: Scheduler, skewMs: number) {
    this.#scheduler = scheduler
    this.skewMs = skewMs
  }

  /** Virtual time plus this peer's skew. */
  now(): number {
    return this.#scheduler.now() + this.skewMs
  }

  /** Schedules on the shared queue; after {@link halt} returns an inert handle. */
  setTimeout(fn: () => void, ms: number): unknown {
    if (this.#halted) return undefined
    const event = this.#scheduler.schedule(fn, ms, this)
    this.#timers.add(event)
    return event
  }

  /** Cancels a timer (of any view of the same scheduler). */
  clearTimeout(handle: unknown): void {
    this.#scheduler.clearTimeout(handle)
  }

  /** Timers of this view still pending. */
  get pendingTimers(): number {
    return this.#timers.size
  }

  /** True after {@link halt}. */
  get halted(): boolean {
    return this.#halted
  }

  /**
   * The peer died: cancels its pending timers and ignores any it sets later
   * (code of the dead peer may still be finishing a continuation). Returns
   * how many timers were cancelled.
   */
  halt(): number {
    this.#halted = true
    const timers = [...this.#timers]
    for (const timer of timers) this.#scheduler.clearTimeout(timer)
    this.#timers.clear()
    return timers.length
  }

  /** @internal The scheduler ran or cancelled one of this view's timers. */
  forget(event: unknown): void {
    this.#timers.delete(event)
  }
}
