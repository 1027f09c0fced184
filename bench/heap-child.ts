/**
 * One side of the heap bench, alone in its own process (started by
 * `bench/heap.ts` with `--expose-gc`):
 *
 *   node --expose-gc --import tsx bench/heap-child.ts <mode> <users> [dataDir]
 *
 * mode `plain`: a Y.Doc with one Y.Map, `map.set(id, record)` per user in
 * transactions of 1,000. Modes `ours-memory` / `ours-level`: `createServer`
 * on a memory store / on LevelDB in `dataDir`, `users.put` 1,000 at a time.
 * Prints one JSON line: memory after loading minus memory before, both
 * measured after full garbage collections.
 */
import * as Y from 'yjs'
import { createServer } from '../server-peer/create-server.js'
import { memoryStore } from '../storage/level-store.js'
import { BATCH_USERS, emitResult, positiveIntArg } from './bench.js'
import { makeRecord, makeRecords, recordId } from './records.js'

/** The modes this child knows. */
export const HEAP_MODES = ['plain', 'ours-memory', 'ours-level'] as const
/** One heap measurement mode. */
export type HeapMode = (typeof HEAP_MODES)[number]

/** What the child reports, in bytes (deltas over the pre-load baseline). */
export interface HeapResult {
  readonly mode: HeapMode
  readonly users: number
  readonly heapUsedBytes: number
  readonly externalBytes: number
  readonly rssBytes: number
  readonly baselineHeapUsedBytes: number
  readonly loadSeconds: number
}

interface Sample {
  readonly heapUsed: number
  readonly external: number
  readonly rss: number
}

/**
 * Collects garbage until the heap stops shrinking (at most 8 rounds), with a
 * turn of the event loop between rounds so that finalizers and weak
 * callbacks run, then samples memory.
 */
async function settledSample(): Promise<Sample> {
  const gc = globalThis.gc
  if (gc === undefined) throw new Error('start this child with --expose-gc')
  let previous = Infinity
  for (let round = 0; round < 8; round++) {
    gc()
    await new Promise((resolve) => setImmediate(resolve))
    const used = process.memoryUsage().heapUsed
    if (used >= previous) break
    previous = used
  }
  const { heapUsed, external, rss } = process.memoryUsage()
  return { heapUsed, external, rss }
}

/** Plain Yjs: one JSON value per user in one map. Returns what must stay reachable. */
function loadPlain(users: number): unknown {
  const doc = new Y.Doc()
  const map = doc.getMap<unknown>('users')
  for (let from = 0; from < users; from += BATCH_USERS) {
    const batch = makeRecords(from, Math.min(BATCH_USERS, users - from))
    doc.transact(() => {
      for (const record of batch) map.set(record.id, record)
    })
  }
  if (map.size !== users) throw new Error(`plain map holds ${map.size} users, not ${users}`)
  return doc
}

/** rostersync's server through its public API. Returns what must stay reachable. */
async function loadOurs(users: number, dataDir: string | undefined) {
  const server = await createServer(dataDir === undefined ? { store: memoryStore() } : { dataDir })
  for (let from = 0; from < users; from += BATCH_USERS) {
    const batch = makeRecords(from, Math.min(BATCH_USERS, users - from))
    await Promise.all(batch.map((record) => server.users.put(record)))
  }
  if (server.users.get(recordId(users - 1)) === undefined) throw new Error('last user missing')
  return server
}

async function main(): Promise<void> {
  const [modeArg, usersArg, dataDir] = process.argv.slice(2)
  const mode = HEAP_MODES.find((m) => m === modeArg)
  if (mode === undefined) {
    console.error(`mode must be one of ${HEAP_MODES.join(', ')}, got ${JSON.stringify(modeArg)}`)
    process.exit(2)
  }
  const users = positiveIntArg(usersArg, 'users')
  if (mode === 'ours-level' && dataDir === undefined) {
    console.error('ours-level needs a dataDir')
    process.exit(2)
  }
  // Warm the generator (and its module state) before the baseline, so that
  // only what loading keeps is counted.
  makeRecord(0)
  const before = await settledSample()
  const started = performance.now()
  let kept: unknown
  let server: Awaited<ReturnType<typeof loadOurs>> | undefined
  if (mode === 'plain') kept = loadPlain(users)
  else kept = server = await loadOurs(users, mode === 'ours-level' ? dataDir : undefined)
  const loadSeconds = (performance.now() - started) / 1000
  const after = await settledSample()
  const result: HeapResult = {
    mode,
    users,
    heapUsedBytes: after.heapUsed - before.heapUsed,
    externalBytes: after.external - before.external,
    rssBytes: after.rss - before.rss,
    baselineHeapUsedBytes: before.heapUsed,
    loadSeconds,
  }
  // Touch what was loaded after sampling, so nothing could be collected early.
  if (kept === undefined) throw new Error('nothing loaded')
  await server?.close()
  emitResult({ ...result })
}

await main()
