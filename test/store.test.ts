import { chmod, mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { MemoryLevel } from 'memory-level'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { hasCode, StorageError } from '../core/errors.js'
import type { Store } from '../core/store.js'
import { FaultyStore } from '../storage/faulty-store.js'
import {
  FLUSH_ON_CLOSE_BYTES,
  LevelStore,
  memoryStore,
  openLevelStore,
} from '../storage/level-store.js'
import { runStoreContract, type StoreFixture } from './contracts/store.contract.js'

const bytes = (...values: number[]): Uint8Array => new Uint8Array(values)
const execFileP = promisify(execFile)

/** A LevelDB store in a fresh temp dir; cleanup closes every store it opened and removes the dir. */
async function levelFixture(): Promise<StoreFixture> {
  const dir = await mkdtemp(join(tmpdir(), 'rostersync-store-'))
  const opened: Store[] = [await openLevelStore(dir)]
  const store = opened[0] as Store
  return {
    store,
    reopen: async () => {
      const again = await openLevelStore(dir)
      opened.push(again)
      return again
    },
    cleanup: async () => {
      for (const each of opened) await each.close()
      await rm(dir, { recursive: true, force: true })
    },
  }
}

async function memoryFixture(): Promise<StoreFixture> {
  const store = memoryStore()
  return { store, cleanup: () => store.close() }
}

async function faultyFixture(): Promise<StoreFixture> {
  const store = new FaultyStore(memoryStore())
  return { store, cleanup: () => store.close() }
}

runStoreContract('LevelStore on disk (classic-level)', levelFixture)
runStoreContract('memoryStore (memory-level)', memoryFixture)
runStoreContract('FaultyStore with no fault armed', faultyFixture)

/** The rejection of `promise`, or a failure if it resolves. */
async function rejectionOf(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => expect.fail('expected a rejection'),
    (reason: unknown) => reason,
  )
}

async function allEntries(store: Store): Promise<[string, Uint8Array][]> {
  const entries: [string, Uint8Array][] = []
  for await (const [key, value] of store.range({ gte: '', lt: '\uffff' })) {
    entries.push([key, value])
  }
  return entries
}

function memoryLevel(): MemoryLevel<string, Uint8Array> {
  return new MemoryLevel<string, Uint8Array>({ keyEncoding: 'utf8', valueEncoding: 'view' })
}

/** Wraps `method` so that each call's last argument (its options) is pushed to `seen`. */
function recordingLast<F>(method: F, seen: unknown[]): F {
  const call = method as (...args: unknown[]) => unknown
  return ((...args: unknown[]) => {
    seen.push(args.at(-1))
    return call(...args)
  }) as F
}

describe('LevelStore', () => {
  it('asks the backend for a synchronous (durable) write on put, del and batch', async () => {
    const db = memoryLevel()
    // Open first: a write to a still-opening database is deferred by
    // re-calling db.put, which would record the options twice.
    await db.open()
    const seen: unknown[] = []
    db.put = recordingLast(db.put.bind(db), seen)
    db.del = recordingLast(db.del.bind(db), seen)
    db.batch = recordingLast(db.batch.bind(db), seen)
    const store = new LevelStore(db)
    await store.put('a', bytes(1))
    await store.del('a')
    await store.batch([{ type: 'put', key: 'b', value: bytes(2) }])
    expect(seen).toEqual([{ sync: true }, { sync: true }, { sync: true }])
    await store.close()
  })

  it('closes the backend only once a running reclaim is done', async () => {
    // classic-level holds its own close back for a compaction; a backend
    // that does not must not be closed under one either.
    const db = memoryLevel()
    await db.open()
    const order: string[] = []
    let finish: () => void = () => undefined
    const compactable = db as MemoryLevel<string, Uint8Array> & {
      compactRange: (start: string, end: string) => Promise<void>
    }
    compactable.compactRange = () =>
      new Promise<void>((resolve) => {
        finish = () => {
          order.push('reclaimed')
          resolve()
        }
      })
    const close = db.close.bind(db)
    db.close = () => {
      order.push('closed')
      return close()
    }
    const store = new LevelStore(db)
    const reclaiming = store.reclaim()
    const closing = store.close()
    await new Promise((resolve) => setTimeout(resolve, 20))
    expect(order).toEqual([])
    finish()
    await Promise.all([reclaiming, closing])
    expect(order).toEqual(['reclaimed', 'closed'])
    // After close a reclaim does nothing.
    await expect(store.reclaim()).resolves.toBeUndefined()
  })

  it('closes the backend iterator when the consumer breaks early', async () => {
    const db = memoryLevel()
    const closes: string[] = []
    const iterator = db.iterator.bind(db)
    db.iterator = ((options: Parameters<typeof db.iterator>[0]) => {
      const it = iterator(options)
      const close = it.close.bind(it)
      it.close = async () => {
        closes.push('closed')
        return close()
      }
      return it
    }) as typeof db.iterator
    const store = new LevelStore(db)
    await store.batch(['a', 'b', 'c'].map((key) => ({ type: 'put', key, value: bytes(1) })))
    for await (const [key] of store.range({ gte: '', lt: 'z' })) {
      if (key === 'a') break
    }
    expect(closes).toEqual(['closed'])
    await store.close()
  })

  it('wraps a backend failure in StorageError naming the operation and key', async () => {
    const db = memoryLevel()
    const cause = new Error('disk on fire')
    db.get = () => Promise.reject(cause)
    db.put = () => Promise.reject(cause)
    const store = new LevelStore(db)
    for (const [operation, attempt] of [
      ['get', () => store.get('user/42')],
      ['put', () => store.put('user/42', bytes(1))],
    ] as const) {
      const error = await rejectionOf(attempt())
      expect(error).toBeInstanceOf(StorageError)
      expect(hasCode(error, 'STORAGE_FAILED')).toBe(true)
      expect((error as StorageError).message).toContain(operation)
      expect((error as StorageError).message).toContain('user/42')
      expect((error as StorageError).cause).toBe(cause)
    }
    await store.close()
  })

  it('opens the database again before the next write after a failed one (LevelDB leaves a torn log record)', async () => {
    // A probe: after a full disk refused one write, the next 50 were
    // acknowledged on the same log and dropped at the next open.
    const db = memoryLevel()
    const calls: string[] = []
    const batch = db.batch.bind(db) as (...args: unknown[]) => Promise<void>
    const close = db.close.bind(db)
    const open = db.open.bind(db)
    let failBatches = 1
    let failOpens = 0
    db.batch = ((...args: unknown[]) => {
      calls.push('batch')
      if (failBatches-- > 0) return Promise.reject(new Error('No space left on device'))
      return batch(...args)
    }) as typeof db.batch
    db.close = () => {
      calls.push('close')
      return close()
    }
    db.open = () => {
      calls.push('open')
      if (failOpens-- > 0) return Promise.reject(new Error('No space left on device'))
      return open()
    }
    const store = new LevelStore(db)
    await store.put('kept', bytes(1))
    const put = (key: string): Promise<void> => store.batch([{ type: 'put', key, value: bytes(2) }])
    expect(hasCode(await rejectionOf(put('lost')), 'STORAGE_FAILED')).toBe(true)
    calls.length = 0
    await put('next')
    expect(calls).toEqual(['close', 'open', 'batch'])
    // Once open again, no more reopens; reads see every acknowledged write.
    calls.length = 0
    await put('after')
    expect(calls).toEqual(['batch'])
    expect(await store.get('kept')).toEqual(bytes(1))
    expect(await store.get('next')).toEqual(bytes(2))
    expect(await store.get('lost')).toBeUndefined()
    // A reopen that fails refuses the write, and the next write tries again.
    failBatches = 1
    failOpens = 1
    await rejectionOf(put('fails'))
    calls.length = 0
    const refused = await rejectionOf(put('waits'))
    expect(hasCode(refused, 'STORAGE_FAILED')).toBe(true)
    expect((refused as Error).message).toMatch(/could not be opened again after a failed write/)
    expect(calls).toEqual(['close', 'open'])
    // Left closed, the database is opened before the next read (which the
    // replica's reload after a failed write needs), then written.
    calls.length = 0
    expect(await store.get('kept')).toEqual(bytes(1))
    expect(calls).toEqual(['open'])
    calls.length = 0
    await put('through')
    expect(calls).toEqual(['batch'])
    expect(await store.get('through')).toEqual(bytes(2))
    // A write queued behind one that fails waits for it, and for the
    // reopen (LevelDB put a queued write after the torn record).
    failBatches = 1
    calls.length = 0
    const [first, second] = await Promise.allSettled([put('fails again'), put('queued')])
    expect(first.status).toBe('rejected')
    expect(second.status).toBe('fulfilled')
    expect(calls).toEqual(['batch', 'close', 'open', 'batch'])
    // A reopen waits for the scans running (closing ends their iterators).
    failBatches = 1
    await rejectionOf(put('fails once more'))
    calls.length = 0
    const scan = store.range({ gte: '', lt: '\uffff' })[Symbol.asyncIterator]()
    expect((await scan.next()).done).toBe(false)
    const written = put('after the scan')
    await new Promise((resolve) => setTimeout(resolve, 50))
    expect(calls).toEqual([])
    let read = 1
    while (!(await scan.next()).done) read++
    await written
    expect(read).toBeGreaterThan(3)
    expect(calls).toEqual(['close', 'open', 'batch'])
    await store.close()
  })

  it('rejects a negative or fractional range limit', async () => {
    const store = memoryStore()
    expect(() => store.range({ gte: 'a', lt: 'b', limit: -1 })).toThrow(/limit/)
    expect(() => store.range({ gte: 'a', lt: 'b', limit: 1.5 })).toThrow(/limit/)
    await store.close()
  })
})

const sameBytes = (a: Uint8Array | undefined, b: Uint8Array): boolean =>
  a !== undefined && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b)

describe('openLevelStore', () => {
  let dir: string

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'rostersync-open-'))
  })

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it('creates missing parent directories', async () => {
    const store = await openLevelStore(join(dir, 'a', 'b', 'db'))
    await store.put('k', bytes(1))
    expect(await store.get('k')).toEqual(bytes(1))
    await store.close()
  })

  it('keeps the data directory to its owner (0700): it holds the signing key', async () => {
    const made = join(dir, 'new')
    const store = await openLevelStore(made)
    await store.put('i/seed', bytes(7))
    await store.close()
    expect((await stat(made)).mode & 0o777).toBe(0o700)
    // A folder made open beforehand (umask 022) is closed at open.
    const open = join(dir, 'open')
    await mkdir(open, { mode: 0o755 })
    await chmod(open, 0o755)
    const again = await openLevelStore(open)
    await again.close()
    expect((await stat(open)).mode & 0o777).toBe(0o700)
    // A folder holding other files (`.`, a home) is left as it is, and said.
    const shared = join(dir, 'shared')
    await mkdir(shared, { mode: 0o755 })
    await chmod(shared, 0o755)
    await writeFile(join(shared, 'notes.txt'), 'kept')
    const warnings: string[] = []
    const listener = (w: Error): number => warnings.push(w.message)
    process.on('warning', listener)
    try {
      const third = await openLevelStore(shared)
      await third.close()
      await new Promise((resolve) => setImmediate(resolve))
    } finally {
      process.off('warning', listener)
    }
    expect((await stat(shared)).mode & 0o777).toBe(0o755)
    expect(warnings.join('\n')).toMatch(/readable by other users .* left as it is/)
  })

  it('rejects with STORAGE_FAILED when the database is already open (locked)', async () => {
    const first = await openLevelStore(dir)
    try {
      const error = await rejectionOf(openLevelStore(dir))
      expect(hasCode(error, 'STORAGE_FAILED')).toBe(true)
      expect((error as StorageError).cause).toBeDefined()
      // Says why, not LevelDB's "Database failed to open" (black-box probe).
      expect((error as StorageError).message).toMatch(/data directory is in use/)
    } finally {
      await first.close()
    }
  })

  it('leaves no write-ahead log to replay after a close that follows large writes', async () => {
    // LevelDB replays its log on open and writes its memtable out then: after
    // a closing snapshot of a large roster, seconds of the next cold start.
    const big = new Uint8Array(FLUSH_ON_CLOSE_BYTES + 1024)
    for (let i = 0; i < big.length; i++) big[i] = (i * 7919) % 251
    const store = await openLevelStore(dir)
    await store.batch([
      { type: 'put', key: 'y/s', value: big },
      { type: 'put', key: 'm/k', value: bytes(1) },
    ])
    await store.close()
    const logs = (await readdir(dir)).filter((name) => /^\d+\.log$/.test(name))
    const logBytes = (await Promise.all(logs.map((name) => stat(join(dir, name))))).reduce(
      (sum, s) => sum + s.size,
      0,
    )
    expect(logBytes).toBeLessThan(64 * 1024)
    const again = await openLevelStore(dir)
    try {
      // Compared as bytes: a deep equality of 4 MB takes seconds.
      expect(sameBytes(await again.get('y/s'), big)).toBe(true)
      expect(await again.get('m/k')).toEqual(bytes(1))
    } finally {
      await again.close()
    }
  })

  it('gives the space of deleted values back on reclaim', async () => {
    // A new generation (issue 13) deletes the old history in one batch:
    // LevelDB keeps it in its tables until a compaction reaches them.
    // Incompressible (LevelDB compresses its tables).
    const noise = (seed: number, n: number): Uint8Array => {
      const out = new Uint8Array(n)
      let x = seed
      for (let i = 0; i < n; i++) {
        x = (Math.imul(x, 1103515245) + 12345) >>> 0
        out[i] = x >>> 24
      }
      return out
    }
    const size = 6 * 1024 * 1024
    const old = noise(1, size)
    const fresh = noise(2, size)
    const first = await openLevelStore(dir)
    await first.batch([{ type: 'put', key: 'y/s', value: old }])
    await first.close()
    const store = await openLevelStore(dir)
    await store.batch([
      { type: 'put', key: 'y/t', value: fresh },
      { type: 'del', key: 'y/s' },
    ])
    await store.close()
    const tableBytes = async (): Promise<number> => {
      const tables = (await readdir(dir)).filter((name) => /\.(ldb|sst)$/.test(name))
      const sizes = await Promise.all(tables.map((name) => stat(join(dir, name))))
      return sizes.reduce((sum, s) => sum + s.size, 0)
    }
    // Both values are still on disk: the delete is only a tombstone.
    expect(await tableBytes()).toBeGreaterThan(1.9 * size)
    const again = await openLevelStore(dir)
    void again.reclaim?.()
    // Closing while the reclaim runs: no error, nothing lost.
    await again.close()
    expect(await tableBytes()).toBeLessThan(1.2 * size)
    const reopened = await openLevelStore(dir)
    try {
      expect(await reopened.get('y/s')).toBeUndefined()
      expect(sameBytes(await reopened.get('y/t'), fresh)).toBe(true)
    } finally {
      await reopened.close()
    }
  })

  it('refuses a folder holding LevelDB data without its CURRENT file, and leaves it as it is', async () => {
    // A probe: a partial copy opened empty, with a new server key, and
    // LevelDB deleted the old table files as unused.
    const store = await openLevelStore(dir)
    for (let i = 0; i < 200; i++) await store.put(`user/${i}`, new Uint8Array(1_000).fill(i))
    await store.close()
    await rm(join(dir, 'CURRENT'))
    const files = (await readdir(dir)).sort()
    const error = await rejectionOf(openLevelStore(dir))
    expect(hasCode(error, 'STORAGE_FAILED')).toBe(true)
    expect((error as Error).message).toMatch(/no CURRENT file/)
    expect((await readdir(dir)).sort()).toEqual(files)
    // A first open cut short (an empty log, no CURRENT) is made again.
    const fresh = join(dir, 'fresh')
    await mkdir(fresh)
    await writeFile(join(fresh, '000003.log'), '')
    const made = await openLevelStore(fresh)
    await made.put('k', bytes(1))
    await made.close()
  })

  it('keeps every write acknowledged after a full disk refused one, across a close (tmpfs; root only)', async (context) => {
    // The real thing: LevelDB on a file system that fills, then has room again.
    const mnt = join(dir, 'small')
    await mkdir(mnt)
    const mounted = await execFileP('mount', ['-t', 'tmpfs', '-o', 'size=3m', 'tmpfs', mnt]).then(
      () => true,
      (error: unknown) => {
        console.log(
          `store: no tmpfs here (${String(error).split('\n')[0]}): the full-disk case is not run`,
        )
        return false
      },
    )
    if (!mounted) {
      context.skip()
      return
    }
    try {
      const data = join(mnt, 'data')
      let store = await openLevelStore(data)
      await writeFile(join(mnt, 'filler'), new Uint8Array(3 * 1024 * 1024 - 64 * 1024))
      let refused = 0
      const acknowledged: string[] = []
      for (let i = 0; i < 400 && refused === 0; i++) {
        try {
          await store.put(`a${i}`, new Uint8Array(2_000).fill(7))
          acknowledged.push(`a${i}`)
        } catch (error) {
          expect(hasCode(error, 'STORAGE_FAILED')).toBe(true)
          refused++
        }
      }
      expect(refused).toBe(1)
      // Still full: the next write is refused without closing the database
      // (it could not be opened again), and reads go on (a review: closed,
      // the replica's reload failed and the peer broke until restarted).
      const still = await rejectionOf(store.put('still full', new Uint8Array(2_000)))
      expect(hasCode(still, 'STORAGE_FAILED')).toBe(true)
      expect((still as Error).message).toMatch(/bytes free/)
      expect(await store.get(acknowledged[0] as string)).toBeDefined()
      await rm(join(mnt, 'filler'))
      for (let i = 0; i < 50; i++) {
        await store.put(`b${i}`, new Uint8Array(2_000).fill(8))
        acknowledged.push(`b${i}`)
      }
      await store.close()
      store = await openLevelStore(data)
      const missing: string[] = []
      for (const key of acknowledged) if ((await store.get(key)) === undefined) missing.push(key)
      await store.close()
      expect(missing).toEqual([])
    } finally {
      await execFileP('umount', [mnt]).catch(() => undefined)
    }
  }, 60_000)

  it('rejects with STORAGE_FAILED when the path is a file', async () => {
    const file = join(dir, 'not-a-dir')
    await writeFile(file, 'x')
    const error = await rejectionOf(openLevelStore(file))
    expect(hasCode(error, 'STORAGE_FAILED')).toBe(true)
  })
})

describe('FaultyStore', () => {
  let inner: Store
  let faulty: FaultyStore

  beforeEach(async () => {
    inner = memoryStore()
    faulty = new FaultyStore(inner)
    await inner.put('a', bytes(1))
  })

  afterEach(async () => {
    await faulty.close()
  })

  it('fails the next write with STORAGE_FAILED and leaves the store unchanged', async () => {
    const before = await allEntries(inner)
    faulty.failNext()
    const error = await rejectionOf(faulty.put('a', bytes(9)))
    expect(error).toBeInstanceOf(StorageError)
    expect(hasCode(error, 'STORAGE_FAILED')).toBe(true)
    expect((error as Error).message).toMatch(/^injected fault/)
    expect(await allEntries(inner)).toEqual(before)
    expect(faulty.faultsInjected).toBe(1)

    await faulty.put('a', bytes(2))
    expect(await inner.get('a')).toEqual(bytes(2))
  })

  it('fails exactly n writes after failNext(n), whatever their kind', async () => {
    faulty.failNext(3)
    const attempts = [
      () => faulty.put('b', bytes(2)),
      () => faulty.del('a'),
      () =>
        faulty.batch([
          { type: 'put', key: 'c', value: bytes(3) },
          { type: 'del', key: 'a' },
        ]),
    ]
    for (const attempt of attempts) {
      expect(hasCode(await rejectionOf(attempt()), 'STORAGE_FAILED')).toBe(true)
    }
    expect(await allEntries(inner)).toEqual([['a', bytes(1)]])
    await faulty.del('a')
    expect(await allEntries(inner)).toEqual([])
  })

  it('fails every write while failAll(true), and recovers after failAll(false)', async () => {
    faulty.failAll(true)
    for (let i = 0; i < 3; i++) {
      expect(hasCode(await rejectionOf(faulty.put(`k${i}`, bytes(i))), 'STORAGE_FAILED')).toBe(true)
    }
    expect(hasCode(await rejectionOf(faulty.batch([])), 'STORAGE_FAILED')).toBe(true)
    expect(await allEntries(faulty)).toEqual([['a', bytes(1)]])
    expect(faulty.faultsInjected).toBe(4)

    faulty.failAll(false)
    await faulty.put('k', bytes(5))
    expect(await inner.get('k')).toEqual(bytes(5))
  })

  it('keeps reads working while writes fail', async () => {
    faulty.failAll(true)
    expect(await faulty.get('a')).toEqual(bytes(1))
    expect(await allEntries(faulty)).toEqual([['a', bytes(1)]])
  })

  it('reports STORE_CLOSED rather than a fault after close', async () => {
    faulty.failAll(true)
    await faulty.close()
    expect(hasCode(await rejectionOf(faulty.put('a', bytes(2))), 'STORE_CLOSED')).toBe(true)
  })

  it('rejects a nonsensical failNext count', () => {
    expect(() => faulty.failNext(-1)).toThrow()
    expect(() => faulty.failNext(0.5)).toThrow()
  })
})
