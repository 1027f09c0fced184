/**
 * One side of the million bench (issue 13), alone in its own process
 * (started by `bench/million.ts`, with `--expose-gc`):
 *
 *   node --expose-gc --import tsx bench/million-child.ts <mode> <users> <dataDir>
 *
 * Modes:
 * - `enrol-ours`: `createServer({ dataDir })`, `users.put` 1,000 at a time,
 *   each round durable before the next; the rate of every stretch of the
 *   roster is reported (does it hold up to the last user?), then the heap
 *   after full garbage collection, then `close()` (the update log stays as
 *   it is: no snapshot unless one is due at once).
 * - `enrol-plain`: plain Yjs, the same records in transactions of 1,000,
 *   each round's update appended to LevelDB (`sync: true`); at the end the
 *   document is stored as one snapshot (what y-leveldb's flush does), so
 *   both sides leave one document on disk.
 * - `serve-ours`: opens the data dir `enrol-ours` left and times it until
 *   it answers the first page of `GET /api/users`; prints
 *   `{ url, http, adminToken, openMs, firstAnswerMs }`, then serves until
 *   stdin closes (the runner probes the API and syncs a fresh device);
 *   `{ cmd: 'heap' }` answers the heap it holds then, `{ cmd: 'cpu' }` its
 *   CPU seconds so far.
 * - `serve-plain`: reads the snapshot `enrol-plain` left into a Y.Doc
 *   (timed) and serves it over y-protocols the same way.
 * - `sync-ours` / `sync-plain` `<url> <siteKey>`: a fresh device
 *   (`createDevice`, timed until its server link is synced) / a plain
 *   y-protocols client (until synced, its update appended to LevelDB).
 * Progress goes to stderr; the last stdout line of an `enrol-*` mode is its
 * JSON result.
 */
import { Level } from 'level'
import * as Y from 'yjs'
import { createServer } from '../server-peer/create-server.js'
import { BATCH_USERS, emitResult, positiveIntArg } from './bench.js'
import { createDevice } from '../peers/create-device.js'
import { commands, cpuSeconds, until } from './network-control.js'
import { connectPlain, PLAIN_MAP, startPlainServer, UpdateLog } from './network-plain.js'
import { openPlainYjsLog, plainUpdateKey } from './plain-yjs-log.js'
import { makeRecord, makeRecords, recordId, type BenchRecord } from './records.js'

/** The modes this child knows. */
export const MILLION_MODES = [
  'enrol-ours',
  'enrol-plain',
  'serve-ours',
  'serve-plain',
  'sync-ours',
  'sync-plain',
] as const
/** One mode. */
export type MillionMode = (typeof MILLION_MODES)[number]

/** The rate of one stretch of the roster. */
export interface Stretch {
  /** Users enrolled at the end of the stretch. */
  readonly upTo: number
  readonly usersPerSecond: number
  /**
   * Users per CPU-second of the whole process (LevelDB's threads included)
   * over the stretch: less sensitive than the wall rate to other work on
   * the machine.
   */
  readonly usersPerCpuSecond: number
  /** Heap used at the end of the stretch (no forced collection), MB. */
  readonly heapMB: number
}

/** What an `enrol-*` mode reports. */
export interface EnrolStretches {
  readonly mode: MillionMode
  readonly users: number
  readonly seconds: number
  readonly usersPerSecond: number
  readonly cpuSeconds: number
  readonly stretches: readonly Stretch[]
  /** Heap used after loading minus before, after full collections, bytes. */
  readonly heapUsedBytes: number
  readonly rssBytes: number
  /** close() (ours: the log stays, no snapshot) or storing the snapshot (plain). */
  readonly closeSeconds: number
}

/** What a `serve-*` mode prints once it answers. */
export interface ServeReady {
  readonly url: string
  readonly http: string
  readonly adminToken: string
  /** The site key devices join with (ours). */
  readonly siteKey: string
  /** From before opening the store to the peer being open (document loaded). */
  readonly openMs: number
  /** From before opening to the first page of users answered (ours) / the doc loaded (plain). */
  readonly firstAnswerMs: number
  readonly heapUsedBytes: number
}

/** What a `sync-*` mode reports. */
export interface FreshSync {
  /** From before opening the device's store to everything received being durable. */
  readonly syncedMs: number
  readonly cpuSeconds: number
}

/** Key of the plain side's snapshot. */
const PLAIN_SNAPSHOT = 'y/snapshot'

/** Stretches reported per run: a line of progress each. */
const STRETCHES = 20

/** Heap after collections settle (see heap-child.ts). */
async function settledHeap(): Promise<{ heapUsed: number; rss: number }> {
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
  const { heapUsed, rss } = process.memoryUsage()
  return { heapUsed, rss }
}

/** A side being enrolled: one durable round, then closing. */
interface Sink {
  write(round: readonly BenchRecord[]): Promise<void>
  /** What must stay reachable while the heap is measured. */
  readonly kept: unknown
  close(): Promise<void>
}

async function oursSink(dataDir: string): Promise<Sink> {
  const server = await createServer({ dataDir })
  return {
    write: async (round) => {
      await Promise.all(round.map((record) => server.users.put(record)))
    },
    kept: server,
    close: async () => {
      if (server.users.get(recordId(0)) === undefined) throw new Error('first user missing')
      await server.close()
    },
  }
}

async function plainSink(dataDir: string): Promise<Sink> {
  const log = await openPlainYjsLog(dataDir, PLAIN_MAP)
  return {
    write: (round) => log.write(round),
    kept: log.doc,
    close: async () => {
      const ops: Array<
        { type: 'put'; key: string; value: Uint8Array } | { type: 'del'; key: string }
      > = [{ type: 'put', key: PLAIN_SNAPSHOT, value: Y.encodeStateAsUpdate(log.doc) }]
      for (let s = 0; s < log.appended(); s++) ops.push({ type: 'del', key: plainUpdateKey(s) })
      await log.db.batch(ops, { sync: true })
      await log.db.close()
    },
  }
}

async function enrol(mode: 'enrol-ours' | 'enrol-plain', users: number, dataDir: string) {
  makeRecord(0)
  const before = await settledHeap()
  const sink = mode === 'enrol-ours' ? await oursSink(dataDir) : await plainSink(dataDir)
  const stretchUsers = Math.max(
    BATCH_USERS,
    Math.ceil(users / STRETCHES / BATCH_USERS) * BATCH_USERS,
  )
  const stretches: Stretch[] = []
  const started = performance.now()
  const cpuBefore = process.cpuUsage()
  let stretchStarted = started
  let stretchCpu = process.cpuUsage()
  let stretchFrom = 0
  // Records are made per round, outside the timed spans, as the enrol
  // bench makes them before its clock starts (1M records at once would
  // sit on the heap being measured).
  let making = 0
  let makingCpu = 0
  for (let from = 0; from < users; from += BATCH_USERS) {
    const madeAt = performance.now()
    const madeCpu = process.cpuUsage()
    const round = makeRecords(from, Math.min(BATCH_USERS, users - from))
    making += performance.now() - madeAt
    const made = process.cpuUsage(madeCpu)
    makingCpu += (made.user + made.system) / 1e6
    await sink.write(round)
    const upTo = from + round.length
    if (upTo - stretchFrom >= stretchUsers || upTo === users) {
      const now = performance.now()
      const seconds = (now - stretchStarted - making) / 1000
      const cpu = process.cpuUsage(stretchCpu)
      const cpuSeconds = (cpu.user + cpu.system) / 1e6 - makingCpu
      const stretch: Stretch = {
        upTo,
        usersPerSecond: Math.round((upTo - stretchFrom) / seconds),
        usersPerCpuSecond: Math.round((upTo - stretchFrom) / cpuSeconds),
        heapMB: Math.round(process.memoryUsage().heapUsed / 1e6),
      }
      stretches.push(stretch)
      console.error(
        `million: ${mode} ${upTo.toLocaleString('en')} users, ${stretch.usersPerSecond.toLocaleString('en')}/s (${stretch.usersPerCpuSecond.toLocaleString('en')} per CPU-s) over the last ${(upTo - stretchFrom).toLocaleString('en')}, heap ${stretch.heapMB} MB`,
      )
      stretchStarted = now
      stretchCpu = process.cpuUsage()
      stretchFrom = upTo
      making = 0
      makingCpu = 0
    }
  }
  const cpu = process.cpuUsage(cpuBefore)
  const totalSeconds = stretches.reduce((sum, s, i) => {
    const from = i === 0 ? 0 : (stretches[i - 1]?.upTo ?? 0)
    return sum + (s.upTo - from) / s.usersPerSecond
  }, 0)
  const after = await settledHeap()
  const closing = performance.now()
  if (sink.kept === undefined) throw new Error('nothing kept')
  await sink.close()
  const result: EnrolStretches = {
    mode,
    users,
    seconds: totalSeconds,
    usersPerSecond: users / totalSeconds,
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
    stretches,
    heapUsedBytes: after.heapUsed - before.heapUsed,
    rssBytes: after.rss - before.rss,
    closeSeconds: (performance.now() - closing) / 1000,
  }
  emitResult({ ...result })
}

/** GET `url` with the admin token; resolves with the status once the body is read. */
async function getStatus(url: string, adminToken: string): Promise<number> {
  const res = await fetch(url, { headers: { authorization: `Bearer ${adminToken}` } })
  await res.arrayBuffer()
  return res.status
}

async function serveOurs(users: number, dataDir: string): Promise<void> {
  const before = await settledHeap()
  const started = performance.now()
  const server = await createServer({ dataDir })
  const openMs = performance.now() - started
  const status = await getStatus(`${server.http}/api/users?limit=50`, server.adminToken)
  const firstAnswerMs = performance.now() - started
  if (status !== 200) throw new Error(`GET /api/users answered ${status}`)
  if (server.users.get(recordId(users - 1)) === undefined) throw new Error('last user missing')
  const after = await settledHeap()
  const ready: ServeReady = {
    url: server.url,
    http: server.http,
    adminToken: server.adminToken,
    siteKey: server.siteKey ?? '',
    openMs,
    firstAnswerMs,
    heapUsedBytes: after.heapUsed - before.heapUsed,
  }
  emitResult({ ...ready })
  for await (const command of commands()) emitResult(await answer(command, before.heapUsed))
  await server.close()
}

async function servePlain(users: number, dataDir: string): Promise<void> {
  const before = await settledHeap()
  const started = performance.now()
  const db = new Level<string, Uint8Array>(dataDir, { keyEncoding: 'utf8', valueEncoding: 'view' })
  await db.open()
  const doc = new Y.Doc()
  const snapshot = await db.get(PLAIN_SNAPSHOT)
  if (snapshot === undefined) throw new Error('no plain snapshot')
  Y.applyUpdate(doc, snapshot)
  const openMs = performance.now() - started
  if (doc.getMap(PLAIN_MAP).get(recordId(users - 1)) === undefined)
    throw new Error('last user missing')
  const served = await startPlainServer(doc)
  const after = await settledHeap()
  const ready: ServeReady = {
    url: served.url,
    http: '',
    adminToken: '',
    siteKey: '',
    openMs,
    firstAnswerMs: openMs,
    heapUsedBytes: after.heapUsed - before.heapUsed,
  }
  emitResult({ ...ready })
  for await (const command of commands()) emitResult(await answer(command, before.heapUsed))
  await served.close()
  await db.close()
}

/**
 * `{ cmd: 'heap' }`: heap used now (after full collections) minus before
 * opening, bytes; `{ cmd: 'cpu' }`: CPU seconds of the process so far (the
 * runner takes the difference over a full sync: the server's share of it,
 * less sensitive than wall time to other work on the machine).
 */
async function answer(
  command: Record<string, unknown>,
  baseline: number,
): Promise<Record<string, unknown>> {
  if (command.cmd === 'cpu') return { cpuSeconds: cpuSeconds() }
  if (command.cmd !== 'heap') throw new Error(`unknown command ${JSON.stringify(command)}`)
  const { heapUsed } = await settledHeap()
  return { heapUsedBytes: heapUsed - baseline }
}

/** A fresh device (or plain client) syncing the whole roster from `url`. */
async function freshSync(
  mode: 'sync-ours' | 'sync-plain',
  users: number,
  dataDir: string,
  url: string,
  siteKey: string,
): Promise<void> {
  const cpuBefore = cpuSeconds()
  const started = performance.now()
  const last = recordId(users - 1)
  let syncedMs: number
  if (mode === 'sync-ours') {
    const device = await createDevice({ id: 'bench-device', dataDir, server: url, siteKey })
    // A full sync of a large roster takes minutes on a busy machine: say
    // how it goes (a refusal, e.g. MESSAGE_TOO_LARGE, shows here).
    const progress = setInterval(() => {
      const status = device.sync.status().serverToDevice
      console.error(
        `million: sync-ours after ${Math.round((performance.now() - started) / 1000)} s: ${JSON.stringify(status)}`,
      )
    }, 30_000)
    try {
      await until(() => device.serverLink?.synced === true, 1_800_000, 'device synced')
    } finally {
      clearInterval(progress)
    }
    syncedMs = performance.now() - started
    if (device.users.get(last) === undefined) throw new Error(`${last} missing after sync`)
    await device.close()
  } else {
    const log = await UpdateLog.open(dataDir)
    const doc = new Y.Doc()
    const client = connectPlain(doc, url, log)
    await client.synced
    syncedMs = performance.now() - started
    if (doc.getMap(PLAIN_MAP).get(last) === undefined) throw new Error(`${last} missing after sync`)
    client.close()
    await log.close()
  }
  const result: FreshSync = { syncedMs, cpuSeconds: cpuSeconds() - cpuBefore }
  emitResult({ ...result })
}

async function main(): Promise<void> {
  const [modeArg, usersArg, dataDir, url, siteKey] = process.argv.slice(2)
  const mode = MILLION_MODES.find((m) => m === modeArg)
  if (mode === undefined || dataDir === undefined) {
    console.error(`usage: million-child.ts <${MILLION_MODES.join('|')}> <users> <dataDir>`)
    process.exit(2)
  }
  const users = positiveIntArg(usersArg, 'users')
  switch (mode) {
    case 'enrol-ours':
    case 'enrol-plain':
      return enrol(mode, users, dataDir)
    case 'serve-ours':
      return serveOurs(users, dataDir)
    case 'serve-plain':
      return servePlain(users, dataDir)
    case 'sync-ours':
    case 'sync-plain':
      return freshSync(mode, users, dataDir, url ?? '', siteKey ?? '')
  }
}

await main()
