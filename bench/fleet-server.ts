/**
 * The server of the fleet bench (issue 13, "1,000 devices on one server"),
 * alone in its own process and driven by `bench/fleet.ts` over
 * stdin/stdout (see network-control.ts):
 *
 *   node --import tsx bench/fleet-server.ts <users> <dataDir> <port> <siteKey>
 *
 * Opens `createServer` on LevelDB in `dataDir`, on 127.0.0.1:`port` (0
 * picks one; a restart passes the first run's), enrols `users` records if
 * the data dir holds none yet, prints `{ url, port, setupSeconds }`, then
 * answers commands until stdin closes:
 * - `{ cmd: 'stats' }`: memory after full garbage collection (when started
 *   with `--expose-gc`), CPU seconds;
 * - `{ cmd: 'edit', i }`: sets one user's title; answers when it started
 *   and when it was durable, on the shared clock.
 */
import { join } from 'node:path'
import { createServer } from '../server-peer/create-server.js'
import { BATCH_USERS, emitResult, positiveIntArg } from './bench.js'
import { commands, cpuSeconds, sharedClockMs } from './network-control.js'
import { makeRecords, recordId } from './records.js'

/** What the child prints once it listens. */
export interface FleetServerReady {
  readonly url: string
  readonly port: number
  /** Opening (and, the first time, enrolling), seconds. */
  readonly setupSeconds: number
  /** Shared-clock ms once it listens. */
  readonly listeningAtMs: number
}

/** The answer to `stats`. */
export interface FleetServerStats {
  readonly rssBytes: number
  readonly heapUsedBytes: number
  readonly externalBytes: number
  readonly cpuSeconds: number
}

/** The answer to `edit`. */
export interface FleetEdit {
  readonly startedAtMs: number
  readonly durableAtMs: number
}

/** The title of the fleet bench's edit `i`. */
export const fleetTitle = (i: number): string => `Fleet edit ${i}`

async function settle(): Promise<void> {
  const gc = globalThis.gc
  if (gc === undefined) return
  for (let round = 0; round < 4; round++) {
    gc()
    await new Promise((resolve) => setImmediate(resolve))
  }
}

async function main(): Promise<void> {
  const [usersArg, dataDir, portArg, siteKey] = process.argv.slice(2)
  if (dataDir === undefined || siteKey === undefined) {
    console.error('usage: fleet-server.ts <users> <dataDir> <port> <siteKey>')
    process.exit(2)
  }
  const users = positiveIntArg(usersArg, 'users')
  const started = performance.now()
  const server = await createServer({
    dataDir: join(dataDir, 'server'),
    host: '127.0.0.1',
    port: Number(portArg),
    siteKey,
  })
  if (server.users.get(recordId(0)) === undefined) {
    for (let from = 0; from < users; from += BATCH_USERS) {
      const round = makeRecords(from, Math.min(BATCH_USERS, users - from))
      await Promise.all(round.map((record) => server.users.put(record)))
    }
  }
  const ready: FleetServerReady = {
    url: server.url,
    port: Number(new URL(server.url).port),
    setupSeconds: (performance.now() - started) / 1000,
    listeningAtMs: sharedClockMs(),
  }
  emitResult({ ...ready })
  for await (const command of commands()) {
    switch (command.cmd) {
      case 'stats': {
        await settle()
        const memory = process.memoryUsage()
        const stats: FleetServerStats = {
          rssBytes: memory.rss,
          heapUsedBytes: memory.heapUsed,
          externalBytes: memory.external,
          cpuSeconds: cpuSeconds(),
        }
        emitResult({ ...stats })
        break
      }
      case 'edit': {
        const i = Number(command.i)
        const startedAtMs = sharedClockMs()
        await server.users.patch(recordId(i % users), { title: fleetTitle(i) })
        const edit: FleetEdit = { startedAtMs, durableAtMs: sharedClockMs() }
        emitResult({ ...edit })
        break
      }
      default:
        throw new Error(`unknown command ${JSON.stringify(command)}`)
    }
  }
  await server.close()
}

await main()
