/**
 * Simulator bench (issue 4, "Speed"): seeds per minute of the deterministic
 * simulator on (1 server, 10 devices, 200 operations, all faults on), run
 * as a swarm on every core. Goal: 1,000 seeds within 10 minutes on this
 * machine, i.e. at least 100 seeds/min.
 *
 * Every seed is a full run: the production peers over three virtual days
 * (delta syncs every 30 minutes, a retention wipe, two partitions, two
 * crashes, a restore from backup; loss, duplication, delay, clogging and
 * skew drawn per seed within the ranges), healing, convergence and
 * every check. Seeds are 1..N, so two runs of the bench simulate the same
 * runs and only the machine differs.
 *
 * The code runs compiled by tsc (as the published CLI runs: bench/build.ts,
 * whatever `BENCH_TSX` says). Under tsx, the same runs take about 1.5x as
 * long (tsx compiles with esbuild's keepNames, which wraps every closure).
 * Sizes: `BENCH_SIM_SEEDS` (default 200), `BENCH_SIM_WORKERS` (default:
 * every core).
 */
import { availableParallelism } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import type { SeedSummary, SwarmOptions } from '../cli/sim-swarm.js'
import { envInt, printTable, round } from './bench.js'
import { BUILD_DIR, buildProject } from './build.js'
import type { Bench } from './bench.js'

/** Goal: seeds per minute (1,000 seeds within 10 minutes). */
const SEEDS_PER_MINUTE_MIN = 100
/** The bench's site: the shape, every kind of fault on. */
const SITE: SwarmOptions = {
  devices: 10,
  ops: 200,
  swarm: true,
  partitions: 2,
  crashes: 2,
  backupRestores: 1,
}

export const simBench: Bench = {
  name: 'sim',
  summary: 'simulator seeds/min: 1 server + 10 devices, 200 ops, all faults (goal >= 100/min)',
  async run() {
    const seeds = envInt('BENCH_SIM_SEEDS', 200)
    const workers = envInt('BENCH_SIM_WORKERS', availableParallelism())
    await buildProject()
    const swarm = (await import(pathToFileURL(join(BUILD_DIR, 'cli', 'sim-swarm.js')).href)) as {
      runSwarm: typeof import('../cli/sim-swarm.js').runSwarm
    }
    console.log(`sim: ${seeds} seeds on ${workers} worker(s) ...`)
    const started = performance.now()
    // CPU time of the whole process, worker threads included: on a shared
    // machine the trustworthy figure (wall time depends on the neighbours).
    const cpuBefore = process.cpuUsage()
    let lastPrint = started
    const results: SeedSummary[] = await swarm.runSwarm(
      SITE,
      Array.from({ length: seeds }, (_, i) => i + 1),
      workers,
      (_summary, done) => {
        const now = performance.now()
        if (now - lastPrint > 10_000 || done === seeds) {
          lastPrint = now
          process.stderr.write(`  ${done}/${seeds} seeds, ${round((now - started) / 1000, 1)} s\n`)
        }
      },
    )
    const wallMs = performance.now() - started
    const cpu = process.cpuUsage(cpuBefore)
    const cpuSecondsPerSeed = (cpu.user + cpu.system) / 1e6 / Math.max(1, results.length)
    const failed = results.filter((r) => !r.ok)
    const perMinute = (results.length / wallMs) * 60_000
    const mean = (f: (r: SeedSummary) => number): number =>
      Math.round(results.reduce((sum, r) => sum + f(r), 0) / Math.max(1, results.length))
    const sorted = results.map((r) => r.wallMs).sort((a, b) => a - b)
    printTable(
      `sim — ${seeds} seeds of (1 server, 10 devices, 200 ops, all faults), compiled JS, ${workers} worker(s)`,
      ['measure', 'value', 'goal', ''],
      [
        [
          'seeds/min',
          round(perMinute, 1),
          `>= ${SEEDS_PER_MINUTE_MIN}`,
          perMinute >= SEEDS_PER_MINUTE_MIN ? 'ok' : 'FAIL',
        ],
        ['1,000 seeds would take (min)', round(1_000 / perMinute, 1), '<= 10', ''],
        ['wall (s)', round(wallMs / 1000, 1), '', ''],
        [
          'CPU s per seed (all threads)',
          round(cpuSecondsPerSeed, 2),
          `<= ${round((60 * workers) / SEEDS_PER_MINUTE_MIN, 2)}`,
          '',
        ],
        [
          'seed wall p50 / p99 (ms)',
          `${sorted[Math.floor(sorted.length / 2)] ?? 0} / ${sorted[Math.floor(sorted.length * 0.99)] ?? 0}`,
          '',
          '',
        ],
        ['messages per seed', mean((r) => r.messages), '', ''],
        ['scheduler events per seed', mean((r) => r.events), '', ''],
        ['failed seeds', failed.length, '0', failed.length === 0 ? 'ok' : 'FAIL'],
      ],
    )
    for (const r of failed)
      console.log(`  FAILED seed ${r.seed}: ${r.replay}\n    ${r.violations.join('\n    ')}`)
    return {
      seeds: results.length,
      workers,
      wallMs: Math.round(wallMs),
      seedsPerMinute: round(perMinute, 1),
      cpuSecondsPerSeed: round(cpuSecondsPerSeed, 2),
      failedSeeds: failed.map((r) => r.seed),
      messagesPerSeed: mean((r) => r.messages),
      eventsPerSeed: mean((r) => r.events),
    }
  },
}
