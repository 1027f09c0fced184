/**
 * One side of the enrolment bench, alone in its own process (started by
 * `bench/enrol.ts`):
 *
 *   node --import tsx bench/enrol-child.ts <mode> <users> <dataDir>
 *
 * Every mode writes the same records, 1,000 per round, each round durable
 * (fsync) before the next starts, into LevelDB in `dataDir`:
 * - `ours-server` / `ours-device`: `users.put` through the public API of
 *   `createServer` / `createDevice`, 1,000 calls per `Promise.all`;
 * - `plain-yjs`: `map.set(id, record)` in one Yjs transaction per round, the
 *   round's update appended to LevelDB in a `sync: true` batch;
 * - `naive-json`: one LevelDB `sync: true` batch per round of
 *   `put(id, JSON.stringify(record))`.
 * Records are generated before the clock starts. Prints one JSON line.
 */
import { Level } from 'level'
import { createDevice } from '../peers/create-device.js'
import { createServer } from '../server-peer/create-server.js'
import { BATCH_USERS, dirBytes, emitResult, positiveIntArg } from './bench.js'
import { openPlainYjsLog } from './plain-yjs-log.js'
import { makeRecords, recordId, type BenchRecord } from './records.js'

/** The modes this child knows. */
export const ENROL_MODES = ['ours-server', 'ours-device', 'plain-yjs', 'naive-json'] as const
/** One enrolment mode. */
export type EnrolMode = (typeof ENROL_MODES)[number]

/** What the child reports. */
export interface EnrolResult {
  readonly mode: EnrolMode
  readonly users: number
  /** From the first write to the last round being durable. */
  readonly seconds: number
  readonly usersPerSecond: number
  /**
   * CPU time of the whole process (all threads: LevelDB's included) over the
   * same span. Less disturbed than `seconds` by other work on the machine.
   */
  readonly cpuSeconds: number
  /** The slowest round of 1,000, ms. */
  readonly slowestRoundMs: number
  readonly openSeconds: number
  /** Closing (for ours: includes compacting the update log into a snapshot). */
  readonly closeSeconds: number
  /** Size of the LevelDB directory after close. */
  readonly diskBytes: number
}

/** A sink that makes one round of records durable. */
interface Sink {
  write(round: readonly BenchRecord[]): Promise<void>
  close(): Promise<void>
}

async function oursSink(mode: 'ours-server' | 'ours-device', dataDir: string): Promise<Sink> {
  const peer =
    mode === 'ours-server'
      ? await createServer({ dataDir })
      : await createDevice({ id: 'bench-device', dataDir })
  return {
    write: async (round) => {
      await Promise.all(round.map((record) => peer.users.put(record)))
    },
    close: async () => {
      if (peer.users.get(recordId(0)) === undefined) throw new Error('first user missing')
      await peer.close()
    },
  }
}

async function plainYjsSink(dataDir: string): Promise<Sink> {
  const log = await openPlainYjsLog(dataDir, 'users')
  return { write: (round) => log.write(round), close: () => log.db.close() }
}

async function naiveJsonSink(dataDir: string): Promise<Sink> {
  const db = new Level<string, string>(dataDir, { keyEncoding: 'utf8', valueEncoding: 'utf8' })
  await db.open()
  return {
    write: (round) =>
      db.batch(
        round.map((record) => ({
          type: 'put' as const,
          key: record.id,
          value: JSON.stringify(record),
        })),
        { sync: true },
      ),
    close: () => db.close(),
  }
}

function openSink(mode: EnrolMode, dataDir: string): Promise<Sink> {
  switch (mode) {
    case 'ours-server':
    case 'ours-device':
      return oursSink(mode, dataDir)
    case 'plain-yjs':
      return plainYjsSink(dataDir)
    case 'naive-json':
      return naiveJsonSink(dataDir)
  }
}

async function main(): Promise<void> {
  const [modeArg, usersArg, dataDir] = process.argv.slice(2)
  const mode = ENROL_MODES.find((m) => m === modeArg)
  if (mode === undefined || dataDir === undefined) {
    console.error(`usage: enrol-child.ts <${ENROL_MODES.join('|')}> <users> <dataDir>`)
    process.exit(2)
  }
  const users = positiveIntArg(usersArg, 'users')
  const rounds: BenchRecord[][] = []
  for (let from = 0; from < users; from += BATCH_USERS) {
    rounds.push(makeRecords(from, Math.min(BATCH_USERS, users - from)))
  }
  const opening = performance.now()
  const sink = await openSink(mode, dataDir)
  const started = performance.now()
  const cpuBefore = process.cpuUsage()
  let slowestRoundMs = 0
  for (const round of rounds) {
    const roundStarted = performance.now()
    await sink.write(round)
    slowestRoundMs = Math.max(slowestRoundMs, performance.now() - roundStarted)
  }
  const finished = performance.now()
  const cpu = process.cpuUsage(cpuBefore)
  await sink.close()
  const closed = performance.now()
  const seconds = (finished - started) / 1000
  const result: EnrolResult = {
    mode,
    users,
    seconds,
    usersPerSecond: users / seconds,
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
    slowestRoundMs,
    openSeconds: (started - opening) / 1000,
    closeSeconds: (closed - finished) / 1000,
    diskBytes: await dirBytes(dataDir),
  }
  emitResult({ ...result })
}

await main()
