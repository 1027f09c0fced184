/**
 * Enrolment-rate bench (issue 2): "Bulk enrolment through the public API
 * (users.put called 100,000 times, 1,000 at a time) completes at >= 10,000
 * users/s". Each side runs in its own process (`enrol-child.ts`) on its own
 * LevelDB temp dir, next to two baselines doing the least work that is
 * still durable: plain Yjs with its updates appended to LevelDB, and naive
 * JSON values in LevelDB.
 */
import {
  mb,
  printTable,
  ratioText,
  round,
  runChild,
  withTempDir,
  type Bench,
  type BenchOptions,
} from './bench.js'
import type { EnrolMode, EnrolResult } from './enrol-child.js'

/** Users per second the public API must reach. */
const USERS_PER_SECOND_MIN = 10_000

const LABELS: Record<EnrolMode, string> = {
  'ours-server': 'rostersync server users.put',
  'ours-device': 'rostersync device users.put',
  'plain-yjs': 'plain Yjs map.set + update to LevelDB',
  'naive-json': 'naive JSON values in LevelDB',
}

const MODES: readonly EnrolMode[] = ['ours-server', 'ours-device', 'plain-yjs', 'naive-json']

/** The enrolment bench. */
export const enrolBench: Bench = {
  name: 'enrol',
  summary: `users/s of durable bulk enrolment on LevelDB, 1,000 per round (target >= ${USERS_PER_SECOND_MIN}/s)`,
  async run({ users, runs }: BenchOptions) {
    // Runs are interleaved (every mode once, then again) so that a burst of
    // other work on the machine hits every side alike, not one of them.
    const all = new Map<EnrolMode, EnrolResult[]>(MODES.map((mode) => [mode, []]))
    for (let run = 1; run <= runs; run++) {
      for (const mode of MODES) {
        console.error(`enrol: measuring ${mode} with ${users} users (run ${run} of ${runs}) ...`)
        const result = await withTempDir((dir) =>
          runChild<EnrolResult>('enrol-child.ts', [mode, String(users), dir]),
        )
        all.get(mode)?.push(result)
      }
    }
    const best = (mode: EnrolMode): EnrolResult =>
      (all.get(mode) ?? []).reduce((a, b) => (b.usersPerSecond > a.usersPerSecond ? b : a))
    const results = MODES.map(best)
    const spread = (mode: EnrolMode): string => {
      const rates = (all.get(mode) ?? []).map((r) => Math.round(r.usersPerSecond))
      return `${Math.min(...rates)}-${Math.max(...rates)}`
    }
    const byMode = new Map(results.map((r) => [r.mode, r]))
    const rate = (mode: EnrolMode): number => byMode.get(mode)?.usersPerSecond ?? NaN
    printTable(
      `Enrolment: ${users.toLocaleString('en')} users, 1,000 per round, every round fsynced (LevelDB); best of ${runs}`,
      [
        'side',
        'users/s',
        'seconds',
        'CPU s',
        'slowest round ms',
        'close s',
        'disk MB',
        'vs plain Yjs',
        'vs naive JSON',
        'users/s over all runs',
      ],
      results.map((r) => [
        LABELS[r.mode],
        Math.round(r.usersPerSecond),
        round(r.seconds),
        round(r.cpuSeconds),
        Math.round(r.slowestRoundMs),
        round(r.closeSeconds),
        mb(r.diskBytes),
        ratioText(r.usersPerSecond / rate('plain-yjs')),
        ratioText(r.usersPerSecond / rate('naive-json')),
        spread(r.mode),
      ]),
    )
    const verdicts: Record<string, unknown> = {}
    for (const mode of ['ours-server', 'ours-device'] as const) {
      const pass = rate(mode) >= USERS_PER_SECOND_MIN
      verdicts[mode] = pass ? 'PASS' : 'FAIL'
      console.log(
        `${pass ? 'PASS' : 'FAIL'}  ${LABELS[mode]}: ${Math.round(rate(mode))} users/s (target >= ${USERS_PER_SECOND_MIN})`,
      )
    }
    return {
      users,
      runs,
      usersPerSecondMin: USERS_PER_SECOND_MIN,
      ...Object.fromEntries(
        results.map((r) => [
          r.mode,
          {
            usersPerSecond: Math.round(r.usersPerSecond),
            seconds: round(r.seconds),
            cpuSeconds: round(r.cpuSeconds),
            slowestRoundMs: Math.round(r.slowestRoundMs),
            closeSeconds: round(r.closeSeconds),
            diskMB: mb(r.diskBytes),
            usersPerSecondAllRuns: (all.get(r.mode) ?? []).map((x) => Math.round(x.usersPerSecond)),
          },
        ]),
      ),
      verdicts,
    }
  },
}
