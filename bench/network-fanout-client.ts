/**
 * The clients of the fan-out bench: `devices` clients in this one process,
 * all connected to one server (started by `bench/network.ts`).
 *
 *   node --import tsx bench/network-fanout-client.ts <mode> <url> <devices> <users> <dataDir>
 *
 * Once every client holds the roster it prints `{ ready: true }`. Then it
 * waits for fan-out edit 0, 1, 2 ... in turn (the server sets user
 * `i % users` to `fanoutTitle(i)`): when every client shows edit `i`, it
 * prints `{ i, seenAtMs }` with the shared-clock time at which each client
 * first showed it. It stops when stdin closes.
 *
 * Modes: `ours` (createDevice on LevelDB; a change counts once the view
 * shows it, which the replica announces only once durable), `plain` (a Y.Doc
 * per client, memory only: y-websocket's default), `plain-durable` (each
 * client appends the update to LevelDB, `sync: true`, before it counts).
 */
import { join } from 'node:path'
import * as Y from 'yjs'
import { createDevice } from '../peers/create-device.js'
import { emitResult, positiveIntArg } from './bench.js'
import {
  benchSiteKey,
  commands,
  cpuSeconds,
  fanoutTitle,
  sharedClockMs,
  until,
} from './network-control.js'
import { connectPlain, PLAIN_MAP, UpdateLog } from './network-plain.js'
import { recordId, type BenchRecord } from './records.js'

/** The fan-out client modes this child knows. */
export const FANOUT_MODES = ['ours', 'plain', 'plain-durable'] as const
/** One fan-out client mode. */
export type FanoutMode = (typeof FANOUT_MODES)[number]

/** What the child prints for each edit every client has seen. */
export interface FanoutSeen {
  readonly i: number
  /** Shared-clock ms at which each client first showed the edit, by client. */
  readonly seenAtMs: readonly number[]
  /**
   * This process's CPU seconds so far: the difference between two reports
   * is what the clients spent on the edits in between, a figure that other
   * load on the machine disturbs far less than latency.
   */
  readonly cpuSeconds: number
}

/** One connected client, as the watcher needs it. */
interface Client {
  /** The title user `id` shows now. */
  title(id: string): unknown
  /** Calls `fn` after each change that counts as shown (see the modes above). */
  onChange(fn: () => void): void
  close(): Promise<void>
}

async function oursClient(url: string, dataDir: string, k: number): Promise<Client> {
  const device = await createDevice({
    id: `fanout-${k}`,
    dataDir,
    server: url,
    siteKey: benchSiteKey(),
  })
  await until(() => device.serverLink?.synced === true, 600_000, `device ${k} synced`)
  return {
    title: (id) => device.users.get(id)?.title,
    onChange: (fn) => void device.replica.onUpdate(fn),
    close: () => device.close(),
  }
}

async function plainClient(url: string, dataDir: string, durable: boolean): Promise<Client> {
  const doc = new Y.Doc()
  const log = durable ? await UpdateLog.open(dataDir) : undefined
  const connection = connectPlain(doc, url, log)
  await connection.synced
  const map = doc.getMap<BenchRecord>(PLAIN_MAP)
  return {
    title: (id) => map.get(id)?.title,
    // With a log, the appends were queued by the client's own update
    // handler, registered first, so `flushed` covers this update.
    onChange: (fn) =>
      doc.on('update', () => (log === undefined ? fn() : void log.flushed().then(fn))),
    async close() {
      connection.close()
      await log?.close()
    },
  }
}

function openClient(mode: FanoutMode, url: string, dataDir: string, k: number): Promise<Client> {
  return mode === 'ours' ? oursClient(url, dataDir, k) : plainClient(url, dataDir, mode !== 'plain')
}

/**
 * Watches every client for edit 0, 1, 2 ... in turn and reports each edit
 * once all clients show it. The server makes edit `i + 1` only after that
 * report, so a client only ever waits for the current edit.
 */
function watch(clients: readonly Client[], users: number): void {
  let i = 0
  let seenAtMs: Array<number | undefined> = clients.map(() => undefined)
  let seen = 0
  clients.forEach((client, k) => {
    client.onChange(() => {
      if (seenAtMs[k] !== undefined || client.title(recordId(i % users)) !== fanoutTitle(i)) return
      seenAtMs[k] = sharedClockMs()
      if (++seen < clients.length) return
      const report: FanoutSeen = { i, seenAtMs: seenAtMs as number[], cpuSeconds: cpuSeconds() }
      emitResult({ ...report })
      i++
      seen = 0
      seenAtMs = clients.map(() => undefined)
    })
  })
}

async function main(): Promise<void> {
  const [modeArg, url, devicesArg, usersArg, dataDir] = process.argv.slice(2)
  const mode = FANOUT_MODES.find((m) => m === modeArg)
  if (mode === undefined || url === undefined || dataDir === undefined) {
    console.error(
      `usage: network-fanout-client.ts <${FANOUT_MODES.join('|')}> <url> <devices> <users> <dataDir>`,
    )
    process.exit(2)
  }
  const devices = positiveIntArg(devicesArg, 'devices')
  const users = positiveIntArg(usersArg, 'users')
  const clients = await Promise.all(
    Array.from({ length: devices }, (_, k) => openClient(mode, url, join(dataDir, `d${k}`), k)),
  )
  watch(clients, users)
  emitResult({ ready: true })
  // Nothing to answer: stdin closing is the cue to stop.
  for await (const _ of commands()) continue
  await Promise.all(clients.map((client) => client.close()))
}

await main()
