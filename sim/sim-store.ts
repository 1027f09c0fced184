/**
 * The simulator's {@link Store}: a sorted map in memory with a crash model.
 *
 * A {@link SimDisk} is a peer's data directory: it survives crashes. A
 * {@link SimStore} is one open handle on it (one process's LevelDB). Writes
 * follow LevelDB with `sync: true`, which is what the production store asks
 * for: a write goes to the log, is fsynced, and only then becomes visible to
 * reads and resolves. Here "fsynced" is a virtual event `flushDelayMs` after
 * the call (on the clock given), so a crash can land while writes are in
 * flight:
 *
 * - an acknowledged write (its promise resolved) always survives;
 * - in-flight writes are lost, except that a prefix of them, in call order,
 *   may have reached the disk without being acknowledged (as a LevelDB log
 *   record can be written before its fsync returns);
 * - a torn write: the first lost write may have reached the disk in part (a
 *   prefix of its operations). LevelDB batches are atomic (the log record
 *   has a checksum), so this never happens with the production store and is
 *   off unless a crash asks for it; it models a store that breaks batch
 *   atomicity, to show what the peers would make of one.
 *
 * Without a clock, every write is durable the moment it is called (nothing
 * is ever in flight), which is all the store contract suite needs.
 *
 * Everything resolves through promises only: no timers but the virtual
 * clock's, no I/O, so the scheduler stays deterministic.
 */
import type { Clock } from '../core/clock.js'
import { InvalidOptionsError, StoreClosedError } from '../core/errors.js'
import type { RangeOptions, Store, StoreOp } from '../core/store.js'
import type { Prng } from './prng.js'

/** A promise that never settles: what every call on a crashed store returns (the process is gone). */
function never<T>(): Promise<T> {
  return new Promise<T>(() => undefined)
}

/** Keys in order (by UTF-16 code unit, as the Store interface orders them) with their values. */
class SortedMap {
  readonly values: Map<string, Uint8Array>
  readonly keys: string[]

  constructor(from?: SortedMap) {
    this.values = new Map(from?.values)
    this.keys = from === undefined ? [] : from.keys.slice()
  }

  /** Index of the first key >= `key`. */
  lowerBound(key: string): number {
    let lo = 0
    let hi = this.keys.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if ((this.keys[mid] as string) < key) lo = mid + 1
      else hi = mid
    }
    return lo
  }

  apply(op: StoreOp): void {
    if (op.type === 'put') {
      if (!this.values.has(op.key)) {
        // Peers mostly append increasing keys (update logs, events); skip the search then.
        const last = this.keys[this.keys.length - 1]
        if (last === undefined || last < op.key) this.keys.push(op.key)
        else this.keys.splice(this.lowerBound(op.key), 0, op.key)
      }
      this.values.set(op.key, op.value)
    } else if (this.values.delete(op.key)) {
      this.keys.splice(this.lowerBound(op.key), 1)
    }
  }

  /** The entries of a scan, taken at once (a LevelDB iterator reads from a snapshot too). */
  scan(range: RangeOptions): [string, Uint8Array][] {
    const start = this.lowerBound(range.gte)
    const end = Math.max(start, this.lowerBound(range.lt))
    const limit = Math.min(range.limit ?? Infinity, end - start)
    const out: [string, Uint8Array][] = []
    for (let n = 0; n < limit; n++) {
      const key = this.keys[range.reverse === true ? end - 1 - n : start + n] as string
      out.push([key, this.values.get(key) as Uint8Array])
    }
    return out
  }
}

/** A copy of a disk's durable contents at one moment: a backup of the data directory. */
export interface DiskSnapshot {
  /** Number of keys in the backup. */
  readonly keys: number
  /** @internal The copied data. */
  readonly data: unknown
}

/** Counters of one disk, over all the stores opened on it. */
export interface DiskStats {
  /** Writes (put, del, non-empty batch) that became durable. */
  writes: number
  /** Operations those writes carried. */
  ops: number
  /** Value bytes those writes carried. */
  bytes: number
  /** Crashes of stores on this disk. */
  crashes: number
  /** In-flight writes lost to crashes (torn ones included). */
  lostWrites: number
  /** Writes that reached the disk in part. */
  tornWrites: number
}

/** Options of {@link SimDisk.open}. */
export interface SimStoreOptions {
  /**
   * The clock on which writes become durable (a peer's clock view). Without
   * one, every write is durable the moment it is called.
   */
  readonly clock?: Clock
  /**
   * Virtual milliseconds from a write's call until it is durable (the fsync),
   * a number or a function drawn per write (default 1). Writes become durable
   * in call order whatever their delays, as LevelDB's log does.
   */
  readonly flushDelayMs?: number | (() => number)
  /**
   * The time flushes are ordered on (virtual time, which never steps); the
   * clock's own time by default. A peer's clock may be set back (the
   * simulator's clock steps), and a disk's flushes do not wait for it to
   * catch up with one scheduled before.
   */
  readonly now?: () => number
}

/** Which in-flight writes a crash keeps. */
export interface CrashOptions {
  /** In-flight writes, oldest first, that reached the disk anyway (default 0). */
  readonly survivingWrites?: number
  /** Operations of the next in-flight write that reached the disk: a torn write (default 0). */
  readonly tornOps?: number
}

/** Draw the crash's outcome from `rng`: any prefix of the in-flight writes survives, uniformly. */
export interface RandomCrash {
  readonly rng: Prng
  /** Also allow the first lost write to be torn (breaks batch atomicity; default false). */
  readonly torn?: boolean
}

/** What a crash did. */
export interface CrashReport {
  /** Writes that were in flight. */
  readonly inFlight: number
  /** Of those, how many reached the disk whole. */
  readonly survived: number
  /** Of those, how many were lost (a torn one counts as lost). */
  readonly lost: number
  /** Operations of the torn write that reached the disk (0: nothing torn). */
  readonly tornOps: number
}

/** A data directory: the durable state that outlives every store opened on it. */
export class SimDisk {
  /** Counters over the disk's life. */
  readonly stats: DiskStats = {
    writes: 0,
    ops: 0,
    bytes: 0,
    crashes: 0,
    lostWrites: 0,
    tornWrites: 0,
  }
  #map: SortedMap
  #open: SimStore | undefined

  /** An empty disk, or one restored from `backup`. */
  constructor(backup?: DiskSnapshot) {
    this.#map = backup === undefined ? new SortedMap() : new SortedMap(backup.data as SortedMap)
  }

  /**
   * Opens a store on this disk. Like LevelDB's lock, one store at a time:
   * close or crash the previous one first.
   */
  open(options: SimStoreOptions = {}): SimStore {
    if (this.#open !== undefined) {
      throw new InvalidOptionsError('the disk is in use by an open store (close or crash it first)')
    }
    const store = new SimStore(this, this.#map, options)
    this.#open = store
    return store
  }

  /** True while a store is open on this disk. */
  get inUse(): boolean {
    return this.#open !== undefined
  }

  /** Number of keys on the disk (durable state only). */
  get size(): number {
    return this.#map.keys.length
  }

  /** Every durable entry in key order, values copied (for checks and tests). */
  entries(): [string, Uint8Array][] {
    return this.#map
      .scan({ gte: '', lt: '\uffff' })
      .map(([key, value]) => [key, value.slice()] as [string, Uint8Array])
  }

  /**
   * A backup of what is durable now. Cheap: values are never changed in
   * place, so the backup shares them.
   */
  snapshot(): DiskSnapshot {
    return { keys: this.#map.keys.length, data: new SortedMap(this.#map) }
  }

  /**
   * Replaces the disk's contents with `backup`: a device restored from an
   * old backup of its data directory. Only while no store is open.
   */
  restore(backup: DiskSnapshot, keepPrefix?: string): void {
    if (this.#open !== undefined) {
      throw new InvalidOptionsError('cannot restore a disk while a store is open on it')
    }
    const restored = new SortedMap(backup.data as SortedMap)
    if (keepPrefix !== undefined) {
      // What the restore keeps of today's disk (a device's key, which a
      // real device keeps apart from the data it backs up).
      for (const key of this.#map.keys) {
        const value = this.#map.values.get(key)
        if (key.startsWith(keepPrefix) && value !== undefined)
          restored.apply({ type: 'put', key, value })
      }
    }
    this.#map = restored
  }

  /** @internal A store on this disk closed or crashed. */
  release(store: SimStore): void {
    if (this.#open === store) this.#open = undefined
  }
}

/** One write waiting for its flush. */
interface InFlight {
  readonly ops: readonly StoreOp[]
  readonly resolve: () => void
  timer: unknown
}

/** A {@link Store} handle on a {@link SimDisk}; see the module comment for the crash model. */
export class SimStore implements Store {
  /** The disk under this store: open it again after a crash or close. */
  readonly disk: SimDisk
  readonly #map: SortedMap
  readonly #clock: Clock | undefined
  readonly #now: (() => number) | undefined
  readonly #flushDelayMs: () => number
  readonly #inFlight: InFlight[] = []
  /** Virtual time of the latest scheduled flush: later writes never flush earlier. */
  #lastFlushAt = -Infinity
  #closed = false
  #crashed = false

  /** Use {@link SimDisk.open} or {@link simStore}. */
  constructor(disk: SimDisk, map: unknown, options: SimStoreOptions) {
    this.disk = disk
    this.#map = map as SortedMap
    this.#clock = options.clock
    this.#now = options.now
    const delay = options.flushDelayMs ?? 1
    this.#flushDelayMs = typeof delay === 'number' ? () => delay : delay
  }

  /** Writes called and not yet durable. */
  get inFlight(): number {
    return this.#inFlight.length
  }

  /** True after {@link crash}. */
  get crashed(): boolean {
    return this.#crashed
  }

  /** The durable value under `key` (a copy), or `undefined`. */
  async get(key: string): Promise<Uint8Array | undefined> {
    if (this.#crashed) return never()
    this.#assertOpen()
    return this.#map.values.get(key)?.slice()
  }

  /** Stores a copy of `value`; resolves once durable. */
  put(key: string, value: Uint8Array): Promise<void> {
    return this.#write([{ type: 'put', key, value: value.slice() }])
  }

  /** Removes `key`; resolves once durable. */
  del(key: string): Promise<void> {
    return this.#write([{ type: 'del', key }])
  }

  /** Applies `ops` atomically and in order; resolves once durable. An empty batch is a no-op. */
  batch(ops: readonly StoreOp[]): Promise<void> {
    const copied = ops.map((op): StoreOp =>
      op.type === 'put' ? { type: 'put', key: op.key, value: op.value.slice() } : op,
    )
    return this.#write(copied, ops.length === 0)
  }

  /** Durable entries in `[gte, lt)`, read from a snapshot taken when iteration starts. */
  range(options: RangeOptions): AsyncIterable<readonly [string, Uint8Array]> {
    const { limit } = options
    // Checked eagerly, as LevelStore does: a bad limit is a caller bug.
    if (limit !== undefined && !(Number.isInteger(limit) && limit >= 0) && limit !== Infinity) {
      throw new InvalidOptionsError(`range limit must be a non-negative integer, got ${limit}`)
    }
    return { [Symbol.asyncIterator]: () => this.#scan(options) }
  }

  /**
   * Closes cleanly: writes in flight are completed (made durable and
   * resolved) first, as LevelDB finishes pending writes before it closes.
   * Later calls reject with `STORE_CLOSED`. Idempotent.
   */
  async close(): Promise<void> {
    if (this.#closed || this.#crashed) return
    for (const write of this.#inFlight) this.#clock?.clearTimeout(write.timer)
    this.#flushThrough(this.#inFlight.length)
    this.#closed = true
    this.disk.release(this)
  }

  /**
   * The process dies now. In-flight writes are lost except what `outcome`
   * keeps; their promises, and every later call on this handle, never
   * settle (nobody is left to see them). Open the disk again to restart.
   */
  crash(outcome: CrashOptions | RandomCrash = {}): CrashReport {
    if (this.#closed || this.#crashed) return { inFlight: 0, survived: 0, lost: 0, tornOps: 0 }
    const inFlight = this.#inFlight.splice(0)
    const { survived, tornOps } = crashOutcome(inFlight, outcome)
    for (const write of inFlight) this.#clock?.clearTimeout(write.timer)
    for (const write of inFlight.slice(0, survived)) this.#apply(write.ops)
    const torn = inFlight[survived]
    if (torn !== undefined && tornOps > 0) {
      for (const op of torn.ops.slice(0, tornOps)) this.#map.apply(op)
      this.disk.stats.tornWrites++
    }
    this.#crashed = true
    this.disk.stats.crashes++
    this.disk.stats.lostWrites += inFlight.length - survived
    this.disk.release(this)
    return { inFlight: inFlight.length, survived, lost: inFlight.length - survived, tornOps }
  }

  #write(ops: readonly StoreOp[], empty = false): Promise<void> {
    if (this.#crashed) return never()
    if (this.#closed) return Promise.reject(new StoreClosedError())
    if (empty) return Promise.resolve()
    const clock = this.#clock
    if (clock === undefined) {
      this.#apply(ops)
      return Promise.resolve()
    }
    return new Promise<void>((resolve) => {
      const write: InFlight = { ops, resolve, timer: undefined }
      this.#inFlight.push(write)
      const now = this.#now?.() ?? clock.now()
      const at = Math.max(now + Math.max(0, this.#flushDelayMs()), this.#lastFlushAt)
      this.#lastFlushAt = at
      write.timer = clock.setTimeout(() => this.#flushed(write), at - now)
    })
  }

  /** The flush of `write` is done: it and every write called before it are durable. */
  #flushed(write: InFlight): void {
    if (this.#crashed || this.#closed) return
    const index = this.#inFlight.indexOf(write)
    if (index >= 0) this.#flushThrough(index + 1)
  }

  #flushThrough(count: number): void {
    for (const write of this.#inFlight.splice(0, count)) {
      this.#apply(write.ops)
      write.resolve()
    }
  }

  #apply(ops: readonly StoreOp[]): void {
    const stats = this.disk.stats
    stats.writes++
    stats.ops += ops.length
    for (const op of ops) {
      if (op.type === 'put') stats.bytes += op.value.byteLength
      this.#map.apply(op)
    }
  }

  async *#scan(options: RangeOptions): AsyncGenerator<readonly [string, Uint8Array]> {
    if (this.#crashed) return await never<void>()
    this.#assertOpen()
    for (const [key, value] of this.#map.scan(options)) yield [key, value.slice()]
  }

  #assertOpen(): void {
    if (this.#closed) throw new StoreClosedError()
  }
}

function crashOutcome(
  inFlight: readonly InFlight[],
  outcome: CrashOptions | RandomCrash,
): { survived: number; tornOps: number } {
  let survived: number
  let tornOps: number
  if ('rng' in outcome) {
    survived = outcome.rng.int(0, inFlight.length)
    const next = inFlight[survived]
    tornOps =
      outcome.torn === true && next !== undefined && next.ops.length > 1
        ? outcome.rng.int(0, next.ops.length - 1)
        : 0
  } else {
    survived = outcome.survivingWrites ?? 0
    tornOps = outcome.tornOps ?? 0
  }
  survived = Math.max(0, Math.min(inFlight.length, Math.floor(survived)))
  // A write that reached the disk whole is a survivor, not a torn write.
  const next = inFlight[survived]
  tornOps = next === undefined ? 0 : Math.max(0, Math.min(next.ops.length - 1, Math.floor(tornOps)))
  return { survived, tornOps }
}

/** A fresh empty disk with a store open on it. */
export function simStore(options: SimStoreOptions = {}): SimStore {
  return new SimDisk().open(options)
}
