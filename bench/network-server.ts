/**
 * The server side of the network benches, alone in its own process and
 * driven by `bench/network.ts` over stdin/stdout (see network-control.ts):
 *
 *   node --import tsx bench/network-server.ts <mode> <users> <dataDir>
 *
 * It builds a roster of `users` records before anything is timed, listens on
 * 127.0.0.1, prints `{ url, port, setupSeconds }`, then answers commands
 * until stdin closes:
 * - `{ cmd: 'cpu' }`: this process's CPU seconds so far;
 * - `{ cmd: 'edit-delta', count }`: edits `count` users spread over the
 *   roster (title, and phone for every other one), one after the other, each
 *   durable; answers the JSON size of their new views;
 * - `{ cmd: 'edit-fanout', i }`: edits the title of one user and answers
 *   when it started and when it was durable (on the shared clock).
 *
 * Modes: `ours` (createServer on LevelDB, the public API), `plain` (a Y.Doc
 * served over y-protocols, memory only), `plain-durable` (the same, each
 * edit appended to LevelDB before it is broadcast), `naive` (an HTTP server
 * answering `GET /users` with JSON.stringify of every record).
 */
import { createServer as createHttpServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import * as Y from 'yjs'
import { createServer } from '../server-peer/create-server.js'
import { BATCH_USERS, emitResult, positiveIntArg } from './bench.js'
import {
  benchSiteKey,
  commands,
  cpuSeconds,
  fanoutTitle,
  sharedClockMs,
} from './network-control.js'
import { fillPlainMap, PLAIN_MAP, startPlainServer, UpdateLog } from './network-plain.js'
import { makeRecords, recordId, type BenchRecord } from './records.js'

/** The server modes this child knows. */
export const SERVER_MODES = ['ours', 'plain', 'plain-durable', 'naive'] as const
/** One server mode. */
export type ServerMode = (typeof SERVER_MODES)[number]

/** What the child prints once it listens. */
export interface ServerReady {
  readonly url: string
  readonly port: number
  /** Building the roster (not part of any measurement). */
  readonly setupSeconds: number
}

/** The answer to `edit-delta`. */
export interface DeltaEdits {
  readonly edited: number
  /** Sum of `JSON.stringify(view)` byte lengths of the edited users after the edit. */
  readonly rawJsonBytes: number
  /** One edited user and its new title, for the client's sanity check. */
  readonly checkId: string
  readonly checkTitle: string
}

/** The answer to `edit-fanout`. */
export interface FanoutEdit {
  readonly i: number
  /** Shared-clock ms just before the edit was issued. */
  readonly startedAtMs: number
  /** Shared-clock ms once the edit was durable on the server (and broadcast for plain). */
  readonly durableAtMs: number
  /** This process's CPU seconds once the edit was durable (see FanoutSeen.cpuSeconds). */
  readonly cpuSeconds: number
}

/** The changed fields of one edit. */
type Change = { title: string; phone?: string }

/** A roster being served, whatever the side. */
interface Served {
  readonly url: string
  readonly port: number
  /** Applies `change` to user `index`; resolves once durable, with the user's new view as JSON. */
  edit(index: number, change: Change): Promise<string>
  close(): Promise<void>
}

async function serveOurs(users: number, dataDir: string): Promise<Served> {
  const server = await createServer({ dataDir: join(dataDir, 'server'), siteKey: benchSiteKey() })
  for (let from = 0; from < users; from += BATCH_USERS) {
    const round = makeRecords(from, Math.min(BATCH_USERS, users - from))
    await Promise.all(round.map((record) => server.users.put(record)))
  }
  return {
    url: server.url,
    port: Number(new URL(server.url).port),
    async edit(index, change) {
      const id = recordId(index)
      await server.users.patch(id, change)
      return JSON.stringify(server.users.get(id))
    },
    close: () => server.close(),
  }
}

async function servePlain(users: number, dataDir: string, durable: boolean): Promise<Served> {
  const doc = new Y.Doc()
  fillPlainMap(doc, makeRecords(0, users), BATCH_USERS)
  const log = durable ? await UpdateLog.open(join(dataDir, 'server')) : undefined
  const served = await startPlainServer(doc, log)
  const map = doc.getMap<BenchRecord>(PLAIN_MAP)
  return {
    url: served.url,
    port: served.port,
    async edit(index, change) {
      const id = recordId(index)
      const record = { ...(map.get(id) as BenchRecord), ...change }
      map.set(id, record)
      await log?.flushed()
      return JSON.stringify(record)
    },
    async close() {
      await served.close()
      await log?.close()
    },
  }
}

async function serveNaive(users: number): Promise<Served> {
  const records: BenchRecord[] = makeRecords(0, users)
  // Stringified per request, as rostersync and plain Yjs encode per request.
  const http = createHttpServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(records))
  })
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve))
  const port = (http.address() as AddressInfo).port
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    async edit(index, change) {
      const record = { ...(records[index] as BenchRecord), ...change }
      records[index] = record
      return JSON.stringify(record)
    },
    close: () => new Promise<void>((resolve) => http.close(() => resolve())),
  }
}

function serve(mode: ServerMode, users: number, dataDir: string): Promise<Served> {
  switch (mode) {
    case 'ours':
      return serveOurs(users, dataDir)
    case 'plain':
    case 'plain-durable':
      return servePlain(users, dataDir, mode === 'plain-durable')
    case 'naive':
      return serveNaive(users)
  }
}

/** Edits `count` users spread evenly over the roster, one after the other. */
async function editDelta(served: Served, users: number, count: number): Promise<DeltaEdits> {
  const edited = Math.min(count, users)
  let rawJsonBytes = 0
  let checkId = ''
  let checkTitle = ''
  for (let k = 0; k < edited; k++) {
    const index = Math.floor((k * users) / edited)
    // One field for half of the users, two for the others.
    const change: Change = { title: `Transferred ${k}` }
    if (k % 2 === 1) change.phone = `+44 20 7946 ${(k % 10_000).toString().padStart(4, '0')}`
    rawJsonBytes += Buffer.byteLength(await served.edit(index, change))
    checkId = recordId(index)
    checkTitle = change.title
  }
  return { edited, rawJsonBytes, checkId, checkTitle }
}

async function answer(
  served: Served,
  users: number,
  command: Record<string, unknown>,
): Promise<Record<string, unknown>> {
  switch (command.cmd) {
    case 'cpu':
      return { cpuSeconds: cpuSeconds() }
    case 'edit-delta':
      return { ...(await editDelta(served, users, Number(command.count))) }
    case 'edit-fanout': {
      const i = Number(command.i)
      const startedAtMs = sharedClockMs()
      await served.edit(i % users, { title: fanoutTitle(i) })
      const edit: FanoutEdit = {
        i,
        startedAtMs,
        durableAtMs: sharedClockMs(),
        cpuSeconds: cpuSeconds(),
      }
      return { ...edit }
    }
    default:
      throw new Error(`unknown command ${JSON.stringify(command)}`)
  }
}

async function main(): Promise<void> {
  const [modeArg, usersArg, dataDir] = process.argv.slice(2)
  const mode = SERVER_MODES.find((m) => m === modeArg)
  if (mode === undefined || dataDir === undefined) {
    console.error(`usage: network-server.ts <${SERVER_MODES.join('|')}> <users> <dataDir>`)
    process.exit(2)
  }
  const users = positiveIntArg(usersArg, 'users')
  const started = performance.now()
  const served = await serve(mode, users, dataDir)
  const ready: ServerReady = {
    url: served.url,
    port: served.port,
    setupSeconds: (performance.now() - started) / 1000,
  }
  emitResult({ ...ready })
  for await (const command of commands()) emitResult(await answer(served, users, command))
  await served.close()
}

await main()
