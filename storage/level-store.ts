/**
 * The {@link Store} over abstract-level: classic-level (LevelDB) on disk in
 * production, memory-level in tests and the simulator. Both speak the same
 * abstract-level API, so one class serves both and they cannot drift apart.
 */
import { existsSync, readdirSync, statSync } from 'node:fs'
import { chmod, mkdir, readdir, stat, statfs } from 'node:fs/promises'
import { join } from 'node:path'
import type {
  AbstractBatchOptions,
  AbstractDelOptions,
  AbstractLevel,
  AbstractPutOptions,
} from 'abstract-level'
import { Level } from 'level'
import { MemoryLevel } from 'memory-level'
import { InvalidOptionsError, StorageError, StoreClosedError } from '../core/errors.js'
import type { RangeOptions, Store, StoreOp } from '../core/store.js'

/** An abstract-level database with string keys and byte values, as LevelStore needs it. */
export type LevelDatabase = AbstractLevel<string | Buffer | Uint8Array, string, Uint8Array>

/** Options of the {@link LevelStore} constructor. */
export interface LevelStoreOptions {
  /**
   * Copy values on the way in and out. Needed for backends that keep the
   * caller's array by reference (memory-level): without it, a caller who
   * reuses a buffer after `put`, or edits a value it read, would silently
   * rewrite stored data. LevelDB copies anyway, so it is off by default.
   */
  readonly copyValues?: boolean
}

// `sync: true` makes classic-level fsync before the write resolves, which is
// what "resolves once durable" in the Store contract means. memory-level and
// abstract-level ignore options they do not know, so it is harmless there.
const SYNC: SyncWriteOptions = { sync: true }

// abstract-level's option types do not declare `sync` (only classic-level's
// do), so it is added here rather than tying the class to classic-level.
interface SyncWriteOptions
  extends
    AbstractPutOptions<string, Uint8Array>,
    AbstractDelOptions<string>,
    AbstractBatchOptions<string, Uint8Array> {
  readonly sync: true
}

/**
 * Bytes written since open past which {@link LevelStore.close} flushes
 * LevelDB's memtable to a table file first: LevelDB's default write buffer.
 * Below it the write-ahead log replays in milliseconds.
 */
export const FLUSH_ON_CLOSE_BYTES = 4 * 1024 * 1024

/**
 * The range a flush asks LevelDB to compact: below every key rostersync
 * writes (all printable ASCII), so that no table is rewritten and only the
 * memtable goes to disk.
 */
const FLUSH_ONLY_KEY = '\u0000'

/**
 * The range a reclaim compacts: every key rostersync writes (printable
 * ASCII, below U+00FF's UTF-8 bytes).
 */
const RECLAIM_RANGE = ['\u0000', '\u00ff'] as const

/** A LevelDB database that can compact a range of keys. */
type Compactable = LevelDatabase & {
  compactRange: (start: string, end: string) => Promise<void>
}

/** Codes abstract-level uses when a database or iterator is used while closing or closed. */
const NOT_OPEN_CODES = new Set(['LEVEL_DATABASE_NOT_OPEN', 'LEVEL_ITERATOR_NOT_OPEN'])

/**
 * A {@link Store} over any abstract-level database opened with `utf8` keys
 * and `view` values. Every write is synchronous (durable once resolved);
 * every backend error surfaces as a `StorageError` (`STORAGE_FAILED`) with
 * the original as `cause`, and any use after {@link close} as
 * `StoreClosedError` (`STORE_CLOSED`).
 *
 * Prefer {@link openLevelStore} and {@link memoryStore}; the constructor is
 * for callers that bring their own database (e.g. tests that instrument it).
 */
export class LevelStore implements Store {
  readonly #db: LevelDatabase
  readonly #copyValues: boolean
  /** Bytes of keys and values written since open (a flush on close is due past FLUSH_ON_CLOSE_BYTES). */
  #written = 0
  #closed = false
  #closing: Promise<void> | undefined
  /** The reclaim running, if any (close waits for it). */
  #reclaiming: Promise<void> | undefined
  /**
   * A write failed: LevelDB's write-ahead log may end in a torn record,
   * after which the next open drops every later record of that log. Set,
   * the database is closed and opened again (a fresh log) before the next
   * write. A probe: after a full disk refused one write, the next 50 were
   * acknowledged, and all of them were gone at the next open ("dropping
   * 8391 bytes; Corruption: checksum mismatch" in LevelDB's LOG).
   */
  #torn = false
  /**
   * A reopen closed the database and could not open it again: it is opened
   * before the next read or write (each tries; a full disk fails them).
   */
  #shut = false
  /** The reopen running, if any (every operation waits for it). */
  #reopening: Promise<void> | undefined
  /**
   * The writes, one at a time, in order: one already queued in LevelDB
   * behind a write that failed went into the log after its torn record,
   * was acknowledged, and was dropped at the next open (a review).
   */
  #writing: Promise<unknown> = Promise.resolve()
  /** Scans running: a reopen waits for them (closing the database ends their iterators). */
  #scans = 0
  #scansEnded: (() => void) | undefined

  constructor(db: LevelDatabase, options: LevelStoreOptions = {}) {
    this.#db = db
    this.#copyValues = options.copyValues ?? false
  }

  /** The value under `key`, as a plain `Uint8Array`, or `undefined`. */
  async get(key: string): Promise<Uint8Array | undefined> {
    const what = `get of key ${JSON.stringify(key)}`
    await this.#readable(what)
    let value: Uint8Array | undefined
    try {
      value = await this.#db.get(key)
    } catch (error) {
      throw this.#wrap(error, what)
    }
    return value === undefined ? undefined : this.#toView(value)
  }

  /** Stores `value` under `key`; resolves once it is on disk. */
  async put(key: string, value: Uint8Array): Promise<void> {
    this.#written += key.length + value.byteLength
    await this.#write(`put of key ${JSON.stringify(key)}`, () =>
      this.#db.put(key, this.#copyIn(value), SYNC),
    )
  }

  /** Removes `key` (absent is fine); resolves once that is on disk. */
  async del(key: string): Promise<void> {
    this.#written += key.length
    await this.#write(`del of key ${JSON.stringify(key)}`, () => this.#db.del(key, SYNC))
  }

  /**
   * Runs the write `run` after the writes before it, reopening the
   * database first if an earlier write failed (see #torn); a failure marks
   * it for the next.
   */
  #write(what: string, run: () => Promise<void>): Promise<void> {
    this.#assertOpen()
    const turn = this.#writing.then(async () => {
      this.#assertOpen()
      if (this.#torn || this.#shut) await this.#reopen(what)
      try {
        await run()
      } catch (error) {
        if (!this.#closed) this.#torn = true
        throw this.#wrap(error, what)
      }
    })
    this.#writing = turn.catch(() => undefined)
    return turn
  }

  /** Waits for a reopen running, and opens the database a failed one left closed. */
  async #readable(what: string): Promise<void> {
    this.#assertOpen()
    await this.#reopening?.catch(() => undefined)
    this.#assertOpen()
    if (this.#shut) await this.#reopen(what)
  }

  /**
   * Closes and opens the database (a fresh write-ahead log), one at a
   * time, once the scans running are done; only when the disk has room to
   * open it again (its recovery writes a table and a manifest): closed on
   * a full disk, nothing could be read either, and the peer broke (a
   * review), where open it still reads.
   */
  async #reopen(what: string): Promise<void> {
    this.#reopening ??= (async () => {
      try {
        if (!this.#shut) {
          await this.#roomToReopen()
          await this.#noScans()
          await this.#db.close()
          this.#shut = true
        }
        await this.#db.open()
        this.#shut = false
        this.#torn = false
      } finally {
        this.#reopening = undefined
      }
    })()
    try {
      await this.#reopening
    } catch (error) {
      throw new StorageError(
        `${what} failed: the database could not be opened again after a failed write: ${errorMessage(error)}`,
        error,
      )
    }
  }

  /** Throws when the database's disk lacks the room its reopening needs. */
  async #roomToReopen(): Promise<void> {
    const location = (this.#db as { location?: unknown }).location
    if (typeof location !== 'string') return
    // Its recovery writes the newest log's records as a table, and a manifest.
    let needed = 0
    for (const name of await readdir(location)) {
      if (!name.endsWith('.log')) continue
      // A log LevelDB deleted meanwhile needs no room.
      const size = await stat(join(location, name)).then(
        (info) => info.size,
        () => 0,
      )
      needed = Math.max(needed, size)
    }
    needed += REOPEN_FREE_BYTES_MIN
    const { bavail, bsize } = await statfs(location)
    if (bavail * bsize < needed)
      throw new Error(
        `${bavail * bsize} bytes free, ${needed} needed to open it again; free some space`,
      )
  }

  /** Resolves once no scan runs (or after REOPEN_SCAN_WAIT_MS: one left unfinished must not hold writes for good). */
  async #noScans(): Promise<void> {
    if (this.#scans === 0) return
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, REOPEN_SCAN_WAIT_MS)
      this.#scansEnded = () => {
        clearTimeout(timer)
        resolve()
      }
    })
    this.#scansEnded = undefined
  }

  /** Applies `ops` in order as one atomic LevelDB write batch; resolves once on disk. */
  async batch(ops: readonly StoreOp[]): Promise<void> {
    this.#assertOpen()
    // Nothing to make durable, so skip the fsync an empty write would cost.
    if (ops.length === 0) return
    const levelOps = ops.map((op) => {
      // Keys count too: a compaction's deletes of the old log are writes.
      this.#written += op.key.length
      if (op.type === 'del') return { type: 'del' as const, key: op.key }
      this.#written += op.value.byteLength
      return { type: 'put' as const, key: op.key, value: this.#copyIn(op.value) }
    })
    await this.#write(`batch of ${ops.length} ops (first key ${JSON.stringify(ops[0]?.key)})`, () =>
      this.#db.batch(levelOps, SYNC),
    )
  }

  /**
   * Entries with keys in `[gte, lt)`, ascending (or descending with
   * `reverse`), at most `limit` (a non-negative integer; absent means all).
   * Nothing is read until iteration starts, and each iteration is a fresh
   * scan; breaking out of the loop closes the underlying iterator.
   */
  range(options: RangeOptions): AsyncIterable<readonly [string, Uint8Array]> {
    const { limit } = options
    // Checked eagerly: a bad limit is a caller bug, and abstract-level would
    // read any negative number as "no limit".
    if (limit !== undefined && !(Number.isInteger(limit) && limit >= 0) && limit !== Infinity) {
      throw new InvalidOptionsError(`range limit must be a non-negative integer, got ${limit}`)
    }
    // A fresh scan per iteration, so the iterable can be iterated again.
    return { [Symbol.asyncIterator]: () => this.#scan(options) }
  }

  /**
   * Closes the database. Idempotent; every later call on this store rejects
   * with `STORE_CLOSED`.
   *
   * After more than FLUSH_ON_CLOSE_BYTES of writes, LevelDB's memtable is
   * written to a table file first (as RocksDB does on close by default;
   * LevelDB does not). Otherwise the next open replays the write-ahead log
   * and writes that table then: after a peer's closing snapshot of a 1M-user
   * roster, 337 MB of log and about 4 s of the next cold start (bench/README,
   * "million"). A failed flush loses nothing: the log still holds it all.
   */
  close(): Promise<void> {
    this.#closed = true
    this.#closing ??= Promise.all([this.#reclaiming, this.#reopening?.catch(() => undefined)])
      .then(() => this.#flush())
      .then(() => this.#db.close())
      .catch((error: unknown) => {
        // Let a later close() retry; the store stays refused either way.
        this.#closing = undefined
        throw new StorageError('close failed', error)
      })
    return this.#closing
  }

  /**
   * Compacts every key (Store.reclaim): LevelDB drops deleted values and
   * their tombstones, and the next open reads one compacted tree. One at a
   * time; a second call while one runs gets that one.
   */
  reclaim(): Promise<void> {
    const db = this.#compactable()
    if (this.#closed || db === undefined || db.status !== 'open') return Promise.resolve()
    this.#reclaiming ??= db
      .compactRange(...RECLAIM_RANGE)
      .catch(() => {
        // Nothing depends on it: the data is the same, only its layout.
      })
      .finally(() => {
        this.#reclaiming = undefined
      })
    return this.#reclaiming
  }

  /** The database, when it can compact a range (classic-level can). */
  #compactable(): Compactable | undefined {
    const db = this.#db as Partial<Compactable>
    return typeof db.compactRange === 'function' ? (db as Compactable) : undefined
  }

  /** Writes LevelDB's memtable to disk when much was written (see close). */
  async #flush(): Promise<void> {
    const db = this.#compactable()
    if (this.#written <= FLUSH_ON_CLOSE_BYTES || db === undefined) return
    if (db.status !== 'open') return
    this.#written = 0
    // LevelDB's CompactRange flushes the memtable first, then compacts the
    // tables overlapping the range: none overlap this one.
    await db.compactRange(FLUSH_ONLY_KEY, FLUSH_ONLY_KEY).catch(() => {
      // Nothing is lost: the write-ahead log still holds every write.
    })
  }

  async *#scan(options: RangeOptions): AsyncGenerator<readonly [string, Uint8Array]> {
    const what = `range [${JSON.stringify(options.gte)}, ${JSON.stringify(options.lt)})`
    await this.#readable(what)
    this.#scans++
    let iterator
    try {
      iterator = this.#db.iterator({
        gte: options.gte,
        lt: options.lt,
        reverse: options.reverse ?? false,
        limit: options.limit ?? Infinity,
      })
    } catch (error) {
      this.#scanEnded()
      throw this.#wrap(error, what)
    }
    try {
      for (;;) {
        let entry: [string, Uint8Array] | undefined
        try {
          entry = await iterator.next()
        } catch (error) {
          throw this.#wrap(error, what)
        }
        if (entry === undefined) return
        yield [entry[0], this.#toView(entry[1])]
      }
    } finally {
      // Runs on exhaustion, error and early `break` alike, so LevelDB never
      // keeps a snapshot pinned for an abandoned scan.
      await iterator.close().catch(() => {
        // A failed close of a read-only iterator loses nothing; do not let it
        // mask the error or the early exit that brought us here.
      })
      this.#scanEnded()
    }
  }

  #scanEnded(): void {
    this.#scans--
    if (this.#scans === 0) this.#scansEnded?.()
  }

  #assertOpen(): void {
    if (this.#closed) throw new StoreClosedError()
  }

  #wrap(error: unknown, what: string): Error {
    // An operation racing close() fails inside abstract-level with a
    // not-open code; to the caller that is simply "the store is closed".
    if (this.#closed && NOT_OPEN_CODES.has(errorCode(error))) return new StoreClosedError()
    return new StorageError(`${what} failed: ${errorMessage(error)}`, error)
  }

  #copyIn(value: Uint8Array): Uint8Array {
    return this.#copyValues ? value.slice() : value
  }

  // Backends may hand back a Buffer (a Uint8Array subclass with a different
  // `slice` and `toJSON`); callers get a plain Uint8Array over the same bytes.
  #toView(value: Uint8Array): Uint8Array {
    if (this.#copyValues) return Uint8Array.prototype.slice.call(value)
    if (value.constructor === Uint8Array) return value
    return new Uint8Array(value.buffer, value.byteOffset, value.byteLength)
  }
}

/**
 * Opens (creating if needed, parents included) a LevelDB store in `dir`.
 * Rejects with `StorageError` when the directory cannot be created or the
 * database cannot be opened, e.g. because another process holds its lock.
 */
export async function openLevelStore(dir: string): Promise<LevelStore> {
  refuseHeadless(dir)
  try {
    // Made here, empty, or a store already: made private. Another folder
    // named as a data directory (`.`, a home, /tmp) is only warned of.
    const ours =
      !existsSync(dir) || existsSync(join(dir, 'CURRENT')) || readdirSync(dir).length === 0
    await mkdir(dir, { recursive: true, mode: 0o700 })
    await keepPrivate(dir, ours)
    const db = new Level<string, Uint8Array>(dir, { keyEncoding: 'utf8', valueEncoding: 'view' })
    await db.open()
    return new LevelStore(db)
  } catch (error) {
    // LevelDB's own words are "Database failed to open"; the reason is
    // its cause (a black-box probe: a second open of a running device's
    // folder said only that).
    const cause = (error as { cause?: { code?: unknown } } | undefined)?.cause
    if (cause?.code === 'LEVEL_LOCKED')
      throw new StorageError(
        `open of ${JSON.stringify(dir)} failed: the data directory is in use (another rostersync peer or process has it open; stop it first)`,
        error,
      )
    const why =
      cause instanceof Error ? `${errorMessage(error)} (${cause.message})` : errorMessage(error)
    throw new StorageError(`open of ${JSON.stringify(dir)} failed: ${why}`, error)
  }
}

/** Least free space on a database's disk before it is reopened after a failed write (see LevelStore#reopen). */
const REOPEN_FREE_BYTES_MIN = 1024 * 1024

/** Longest a reopen waits for the scans running to end, ms. */
const REOPEN_SCAN_WAIT_MS = 60_000

/**
 * Refuses a folder that holds LevelDB's data (table files, or a log with
 * records) without its `CURRENT` file, which names the rest: LevelDB would
 * make a new, empty database there and delete the old files as unused (a
 * probe: a partial copy of a server's folder opened with no users and a
 * new server key, and 8,000 users' table files were gone). A log without
 * records, or a lone manifest, is a database whose first open was cut
 * short: made again.
 */
function refuseHeadless(dir: string): void {
  if (!existsSync(dir) || !statSync(dir).isDirectory() || existsSync(join(dir, 'CURRENT'))) return
  const data = readdirSync(dir).filter(
    (name) =>
      /^\d+\.(ldb|sst)$/.test(name) ||
      (/^\d+\.log$/.test(name) && statSync(join(dir, name)).size > 0),
  )
  if (data.length === 0) return
  throw new StorageError(
    `open of ${JSON.stringify(dir)} refused: it holds LevelDB data (${data.slice(0, 3).join(', ')}${data.length > 3 ? ', …' : ''}) but no CURRENT file, which names it (a partial copy, or damage); opened, the data would be dropped. Restore the whole folder from a backup`,
  )
}

/**
 * Makes `dir` readable by its owner only: it holds the peer's signing key
 * (`i/seed`), PIN hashes and card numbers, in LevelDB files that LevelDB
 * writes 0644 (a black-box probe copied them as `nobody` from a 0755
 * folder). A folder it cannot change (another owner's) is said in a
 * process warning, once per open.
 */
async function keepPrivate(dir: string, ours: boolean): Promise<void> {
  if (process.platform === 'win32') return
  const { mode } = await stat(dir)
  if ((mode & 0o077) === 0) return
  const warn = (why: string): void =>
    process.emitWarning(
      `${dir} is readable by other users (mode ${(mode & 0o777).toString(8)}) and ${why}`,
      { code: 'ROSTERSYNC_DATA_DIR_MODE' },
    )
  if (!ours) {
    warn('holds other files: left as it is; give rostersync a folder of its own (mode 0700)')
    return
  }
  try {
    // Group and others lose access; the owner's and the special bits stay.
    await chmod(dir, mode & 0o7700)
  } catch (error) {
    warn(`could not be made private: ${errorMessage(error)}`)
  }
}

/** A fresh, empty in-memory store with the same behaviour as the LevelDB one. */
export function memoryStore(): LevelStore {
  // storeEncoding 'view' keeps keys as UTF-8 bytes, so keys sort exactly as
  // they do in LevelDB, and no Buffer is involved.
  const db = new MemoryLevel<string, Uint8Array>({
    keyEncoding: 'utf8',
    valueEncoding: 'view',
    storeEncoding: 'view',
  })
  return new LevelStore(db, { copyValues: true })
}

function errorCode(error: unknown): string {
  const code: unknown = (error as { code?: unknown } | null)?.code
  return typeof code === 'string' ? code : ''
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}
