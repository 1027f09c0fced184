/**
 * The bench runner: `npm run bench [-- --only heap,enrol] [--users 100000] [--runs 3]`.
 * Prints the machine, runs each registered bench in turn (each prints its
 * own table), then one JSON line with every figure, for release notes.
 * A missed target is reported, never turned into a failing exit code; only
 * bad flags or a crashed bench exit non-zero.
 */
import { cpus, loadavg, totalmem } from 'node:os'
import { parseArgs } from 'node:util'
import { adminBench } from './admin.js'
import { agingBench } from './aging.js'
import type { Bench } from './bench.js'
import { enrolBench } from './enrol.js'
import { fleetBench } from './fleet.js'
import { floodBench } from './flood.js'
import { heapBench } from './heap.js'
import { loadBench } from './load.js'
import { millionBench } from './million.js'
import { networkBench } from './network.js'
import { pinBench } from './pin.js'
import { signingBench } from './signing.js'
import { simBench } from './sim.js'
import { variantsBench } from './variants.js'
import { buildProject, childrenThroughTsx } from './build.js'
import { calibrationMs } from './calibrate.js'

/** Every bench, in the order they run. Later issues append theirs here. */
const BENCHES: readonly Bench[] = [
  heapBench,
  enrolBench,
  networkBench,
  loadBench,
  simBench,
  floodBench,
  signingBench,
  adminBench,
  agingBench,
  millionBench,
  fleetBench,
  pinBench,
  variantsBench,
]

const DEFAULT_USERS = 100_000

const usage = `usage: npm run bench -- [--only <name>[,<name>...]] [--users <n>] [--runs <n>] [--json]
benches:
${BENCHES.map((b) => `  ${b.name.padEnd(8)} ${b.summary}`).join('\n')}`

interface Flags {
  only?: string | undefined
  users?: string | undefined
  runs?: string | undefined
  json?: boolean | undefined
  help?: boolean | undefined
}

/** Run by `rostersync bench` (bin/rostersync.js sets it): errors carry the command's prefix, as its others do. */
const WHO = process.env.ROSTERSYNC_CLI === '1' ? 'rostersync bench: ' : ''

/** A positive integer flag (decimal digits only), or exit 2 with a one-line error. */
function positiveFlag(value: string | undefined, name: string, fallback: number): number {
  const n = value === undefined ? fallback : /^\d+$/.test(value) ? Number(value) : NaN
  if (!Number.isSafeInteger(n) || n <= 0) {
    console.error(`${WHO}--${name} must be a positive integer, got ${JSON.stringify(value)}`)
    process.exit(2)
  }
  return n
}

function options(): { only: Bench[]; users: number; runs: number; json: boolean } {
  let values: Flags
  try {
    values = parseArgs({
      options: {
        only: { type: 'string' },
        users: { type: 'string' },
        runs: { type: 'string' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    }).values
  } catch (error) {
    // One line: the usage is what --help prints.
    console.error(`${WHO}${error instanceof Error ? error.message : String(error)} (see --help)`)
    process.exit(2)
  }
  if (values.help === true) {
    console.log(usage)
    process.exit(0)
  }
  const users = positiveFlag(values.users, 'users', DEFAULT_USERS)
  const runs = positiveFlag(values.runs, 'runs', 1)
  const names = values.only?.split(',').map((name) => name.trim()) ?? BENCHES.map((b) => b.name)
  const only: Bench[] = []
  for (const name of names) {
    const bench = BENCHES.find((b) => b.name === name)
    if (bench === undefined) {
      console.error(
        `${WHO}unknown bench ${JSON.stringify(name)} (one of ${BENCHES.map((b) => b.name).join(', ')})`,
      )
      process.exit(2)
    }
    only.push(bench)
  }
  return { only, users, runs, json: values.json === true }
}

/** The machine the figures come from. */
function machine(): Record<string, string | number> {
  const cores = cpus()
  return {
    cpu: cores[0]?.model.trim() ?? 'unknown',
    cores: cores.length,
    ramGB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    date: new Date().toISOString(),
    // Other work on the machine skews every figure; the 1-minute load
    // average at the start tells a reader whether the run was quiet.
    load1m: Math.round((loadavg()[0] ?? 0) * 100) / 100,
    // How fast the machine runs today (bench/calibrate.ts): the figures of
    // two days compare after scaling by their calibrations.
    calibrationMs: calibrationMs(),
  }
}

async function main(): Promise<void> {
  const { only, users, runs, json } = options()
  // With --json, stdout carries the figures' JSON line only: the tables
  // every bench prints go to stderr.
  const print = console.log
  if (json) console.log = console.error
  const host = machine()
  console.log('rostersync benchmarks')
  for (const [key, value] of Object.entries(host)) console.log(`  ${key.padEnd(8)} ${value}`)
  console.log(`  users    ${users.toLocaleString('en')}`)
  console.log(`  runs     ${runs} (timing benches report the best)`)
  if (Number(host.load1m) > Number(host.cores) / 2) {
    console.log(`  warning: the machine is busy (load ${host.load1m}); figures will be noisy`)
  }
  const figures: Record<string, unknown> = {}
  // Children run compiled, as a deployment runs (bench/build.ts).
  if (!childrenThroughTsx()) await buildProject()
  console.log(
    `  children ${childrenThroughTsx() ? 'through tsx (BENCH_TSX=1)' : 'compiled by tsc'}`,
  )
  for (const bench of only) {
    try {
      figures[bench.name] = await bench.run({ users, runs })
    } catch (error) {
      console.error(`bench ${bench.name} crashed:`, error)
      figures[bench.name] = { error: error instanceof Error ? error.message : String(error) }
      process.exitCode = 1
    }
  }
  const load1mAtEnd = Math.round((loadavg()[0] ?? 0) * 100) / 100
  console.log(`\nload at end: ${load1mAtEnd}`)
  print(JSON.stringify({ machine: { ...host, load1mAtEnd }, users, runs, ...figures }))
}

await main()
