/**
 * One client of the sync benches, alone in its own process (started by
 * `bench/network.ts`): it opens its LevelDB in `dataDir` (fresh for a full
 * sync, the one a previous run left for a delta sync), syncs from the server
 * at `url` until what it received is durable, closes, and prints one JSON
 * line.
 *
 *   node --import tsx bench/network-client.ts <mode> <url> <dataDir> <users> [<checkId> <checkTitle>]
 *
 * Modes: `ours` (createDevice, timed until `serverLink.synced`), `plain`
 * (a Y.Doc synced over y-protocols, its update appended to LevelDB),
 * `naive` (GET the JSON roster, one LevelDB batch of one put per user).
 * Every LevelDB write is `sync: true`. Afterwards the client checks that it
 * holds the last user (and, given a check, that user's new title), so a
 * broken sync cannot pass for a fast one.
 */
import { get } from 'node:http'
import { Level } from 'level'
import * as Y from 'yjs'
import { createDevice } from '../peers/create-device.js'
import { emitResult, positiveIntArg } from './bench.js'
import { benchSiteKey, cpuSeconds, until } from './network-control.js'
import { connectPlain, PLAIN_MAP, UpdateLog } from './network-plain.js'
import { recordId, type BenchRecord } from './records.js'

/** The client modes this child knows. */
export const CLIENT_MODES = ['ours', 'plain', 'naive'] as const
/** One client mode. */
export type ClientMode = (typeof CLIENT_MODES)[number]

/** What the client reports; times are ms from the client's start. */
export interface SyncResult {
  readonly mode: ClientMode
  /** The local store is open (and, for a delta, loaded). */
  readonly openMs: number
  /** Everything the server sent is applied and durable. */
  readonly syncedMs: number
  /** CPU seconds of this process (all threads) until synced. */
  readonly cpuSeconds: number
  /** Closing afterwards (rostersync compacts its update log into a snapshot). */
  readonly closeMs: number
}

/** What a side needs to check after syncing. */
interface Expect {
  readonly users: number
  readonly checkId: string | undefined
  readonly checkTitle: string | undefined
}

/** A check that failed means the bench measured something else than a sync. */
function verify(title: (id: string) => unknown, expect: Expect): void {
  if (title(recordId(expect.users - 1)) === undefined)
    throw new Error(`user ${recordId(expect.users - 1)} missing after sync`)
  if (expect.checkId !== undefined && title(expect.checkId) !== expect.checkTitle)
    throw new Error(`user ${expect.checkId} does not show the edit after sync`)
}

/** One side, synced: its milestones (ms from the start) and what is left to do. */
interface Synced {
  readonly openMs: number
  readonly syncedMs: number
  readonly cpuSeconds: number
  /** The title a user shows now, for {@link verify}. */
  title(id: string): unknown
  close(): Promise<void>
}

type Run = (url: string, dataDir: string, started: number) => Promise<Synced>

const runOurs: Run = async (url, dataDir, started) => {
  const device = await createDevice({
    id: 'bench-device',
    dataDir,
    server: url,
    siteKey: benchSiteKey(),
  })
  const openMs = performance.now() - started
  await until(() => device.serverLink?.synced === true, 600_000, 'device synced')
  return {
    openMs,
    syncedMs: performance.now() - started,
    cpuSeconds: cpuSeconds(),
    title: (id) => device.users.get(id)?.title,
    close: () => device.close(),
  }
}

const runPlain: Run = async (url, dataDir, started) => {
  const log = await UpdateLog.open(dataDir)
  const doc = new Y.Doc()
  await log.load(doc)
  const openMs = performance.now() - started
  const client = connectPlain(doc, url, log)
  await client.synced
  const map = doc.getMap<BenchRecord>(PLAIN_MAP)
  return {
    openMs,
    syncedMs: performance.now() - started,
    cpuSeconds: cpuSeconds(),
    title: (id) => map.get(id)?.title,
    async close() {
      client.close()
      await log.close()
    },
  }
}

/** The body of a GET, as one buffer. */
function download(url: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    get(url, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.on('end', () => resolve(Buffer.concat(chunks)))
      res.on('error', reject)
    }).on('error', reject)
  })
}

const runNaive: Run = async (url, dataDir, started) => {
  const db = new Level<string, string>(dataDir, { keyEncoding: 'utf8', valueEncoding: 'utf8' })
  await db.open()
  const openMs = performance.now() - started
  const records = JSON.parse((await download(`${url}/users`)).toString('utf8')) as BenchRecord[]
  await db.batch(
    records.map((record) => ({
      type: 'put' as const,
      key: record.id,
      value: JSON.stringify(record),
    })),
    { sync: true },
  )
  const byId = new Map(records.map((r) => [r.id, r.title]))
  return {
    openMs,
    syncedMs: performance.now() - started,
    cpuSeconds: cpuSeconds(),
    title: (id) => byId.get(id),
    close: () => db.close(),
  }
}

const RUNS: Record<ClientMode, Run> = { ours: runOurs, plain: runPlain, naive: runNaive }

async function main(): Promise<void> {
  const [modeArg, url, dataDir, usersArg, checkId, checkTitle] = process.argv.slice(2)
  const mode = CLIENT_MODES.find((m) => m === modeArg)
  if (mode === undefined || url === undefined || dataDir === undefined) {
    console.error(
      `usage: network-client.ts <${CLIENT_MODES.join('|')}> <url> <dataDir> <users> [<checkId> <checkTitle>]`,
    )
    process.exit(2)
  }
  const expect: Expect = { users: positiveIntArg(usersArg, 'users'), checkId, checkTitle }
  // CPU is counted from here, so process start-up and module loading are
  // left out, as they are from the wall time.
  const cpuBefore = cpuSeconds()
  const started = performance.now()
  const synced = await RUNS[mode](url, dataDir, started)
  verify((id) => synced.title(id), expect)
  const closeStarted = performance.now()
  await synced.close()
  const result: SyncResult = {
    mode,
    openMs: synced.openMs,
    syncedMs: synced.syncedMs,
    cpuSeconds: synced.cpuSeconds - cpuBefore,
    closeMs: performance.now() - closeStarted,
  }
  emitResult({ ...result })
}

await main()
