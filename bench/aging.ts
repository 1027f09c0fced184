/**
 * Aging bench (issue 13): a site that has lived for years against the same
 * live data without its history. One child builds the aged document
 * (`--users` live users, default 100k; `BENCH_AGING_OVERWRITES` server
 * edits, default 50 per user, 5M at 100k; `BENCH_AGING_CLIENTS` retired
 * clientIDs with one device fill each, default 20,000); then a rostersync
 * server opens it (`aged`) and, in a fresh process, its generation base
 * (`base`: `core/generation.ts`, what a new generation holds and what a
 * fresh site with the same data holds). Goal after a new generation: every
 * figure within 1.2x a fresh site; the aged column shows what accumulation
 * costs.
 */
import { execFileSync } from 'node:child_process'
import { join } from 'node:path'
import type { AgingResult, CompactResult } from './aging-child.js'
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

const envInt = (name: string, fallback: number): number => {
  const raw = process.env[name]
  const n = raw === undefined ? fallback : Number(raw)
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`${name} must be a whole number`)
  return n
}

type Figure = Exclude<keyof AgingResult, 'mode' | 'users' | 'fullSyncTimedOut'>

/** Figures that are lower bounds when the full sync had not finished (shown "> N"). */
const SYNC_FIGURES: ReadonlySet<Figure> = new Set(['fullSyncSeconds', 'fullSyncCpuSeconds'])

/** `text`, marked "> " when `key` is a full sync figure of a result whose sync did not finish. */
const atLeast = (result: AgingResult, key: Figure, text: number | string): string | number =>
  result.fullSyncTimedOut && SYNC_FIGURES.has(key) ? `> ${text}` : text

/** A ratio, marked "> " or "< " when its numerator or denominator is a lower bound. */
function boundedRatio(top: AgingResult, bottom: AgingResult, key: Figure): string {
  const text = ratioText(top[key] / bottom[key])
  if (!SYNC_FIGURES.has(key)) return text
  if (top.fullSyncTimedOut && bottom.fullSyncTimedOut) return '?'
  if (top.fullSyncTimedOut) return `> ${text}`
  return bottom.fullSyncTimedOut ? `< ${text}` : text
}

const ROWS: ReadonlyArray<readonly [string, Figure, (n: number) => number | string]> = [
  ['document bytes (MB)', 'docBytes', mb],
  ['clientIDs', 'clientIds', (n) => n],
  ['step 1 bytes (state vector)', 'stateVectorBytes', (n) => n],
  ['server heap (MB)', 'heapUsedBytes', mb],
  ['open the data dir (s)', 'openSeconds', (n) => round(n)],
  ['one edit p50 (ms)', 'editP50Ms', (n) => round(n)],
  ['one edit p99 (ms)', 'editP99Ms', (n) => round(n)],
  ['one edit, CPU (ms, mean)', 'editCpuMs', (n) => round(n, 2)],
  ['encode the whole document (ms)', 'encodeMs', (n) => round(n, 1)],
  ['full sync to a fresh device (s)', 'fullSyncSeconds', (n) => round(n)],
  ['open the data dir, CPU (s)', 'openCpuSeconds', (n) => round(n)],
  ['encode the whole document, CPU (ms)', 'encodeCpuMs', (n) => round(n, 1)],
  ['full sync, CPU of both sides (s)', 'fullSyncCpuSeconds', (n) => round(n)],
]

/** The aging bench. */
export const agingBench: Bench = {
  name: 'aging',
  summary: 'an aged site (overwrites, retired clientIDs) vs its generation base (target <= 1.2x)',
  async run({ users }: BenchOptions) {
    const overwrites = envInt('BENCH_AGING_OVERWRITES', users * 50)
    const clients = envInt('BENCH_AGING_CLIENTS', 20_000)
    return withTempDir(async (dir) => {
      const file = join(dir, 'aged.bin')
      console.error(
        `aging: building ${users.toLocaleString('en')} users, ${overwrites.toLocaleString('en')} overwrites, ${clients.toLocaleString('en')} retired clientIDs ...`,
      )
      const built = await runChild<{ bytes: number; seconds: number }>('aging-child.ts', [
        'build',
        String(users),
        String(overwrites),
        String(clients),
        file,
      ])
      console.error(`aging: built in ${round(built.seconds, 1)} s`)
      const results: AgingResult[] = []
      let switched: CompactResult | undefined
      for (const mode of ['aged', 'compacted', 'base'] as const) {
        if (mode === 'compacted') {
          console.error('aging: server.compactHistory() on the aged data dir ...')
          switched = await runChild<CompactResult>('aging-child.ts', [
            'compact',
            String(users),
            file,
            join(dir, mode),
          ])
          console.error(
            `aging: compactHistory ${round(switched.compactSeconds, 1)} s, ${switched.clientIdsBefore} -> ${switched.clientIdsAfter} clientIDs; event loop stall max ${switched.stallMaxMs} ms, p99 ${switched.stallP99Ms} ms, ${switched.readsDuringSwitch} reads answered meanwhile; generation check ${switched.checkScanMs} ms by scan, ${switched.checkMs} ms counted (first look ${switched.checkFirstMs} ms)`,
          )
        }
        // Each measurement starts with the disk quiet: the step before it
        // (the switch's process above all) leaves writes the kernel is still
        // flushing, which the measured edits' fsyncs would wait behind.
        execFileSync('sync')
        console.error(`aging: measuring ${mode} ...`)
        results.push(
          await runChild<AgingResult>(
            'aging-child.ts',
            [mode, String(users), file, join(dir, mode)],
            { exposeGc: true },
          ),
        )
      }
      const [aged, compacted, base] = results as [AgingResult, AgingResult, AgingResult]
      printTable(
        `Aging: ${users.toLocaleString('en')} live users after ${overwrites.toLocaleString('en')} overwrites and ${clients.toLocaleString('en')} retired clientIDs; compactHistory took ${round(switched?.compactSeconds ?? NaN, 1)} s`,
        [
          'figure',
          'aged',
          'after a new generation',
          'fresh site (base)',
          'aged / fresh',
          'new generation / fresh',
        ],
        ROWS.map(([label, key, show]) => [
          label,
          atLeast(aged, key, show(aged[key])),
          atLeast(compacted, key, show(compacted[key])),
          atLeast(base, key, show(base[key])),
          boundedRatio(aged, base, key),
          boundedRatio(compacted, base, key),
        ]),
      )
      const unfinished = results.filter((r) => r.fullSyncTimedOut).map((r) => r.mode)
      if (unfinished.length > 0)
        console.log(
          `full sync not finished within BENCH_AGING_SYNC_MAX_S (default 900 s) for: ${unfinished.join(', ')} ("> N": a lower bound)`,
        )
      return {
        users,
        overwrites,
        clients,
        buildSeconds: round(built.seconds, 1),
        compactSeconds: round(switched?.compactSeconds ?? NaN, 1),
        compactStallMaxMs: switched?.stallMaxMs,
        compactStallP99Ms: switched?.stallP99Ms,
        compactReadsDuringSwitch: switched?.readsDuringSwitch,
        generationCheckScanMs: switched?.checkScanMs,
        generationCheckFirstMs: switched?.checkFirstMs,
        generationCheckMs: switched?.checkMs,
        aged,
        compacted,
        base,
        ratios: Object.fromEntries(ROWS.map(([, key]) => [key, round(aged[key] / base[key])])),
        generationRatios: Object.fromEntries(
          ROWS.map(([, key]) => [key, round(compacted[key] / base[key])]),
        ),
      }
    })
  },
}
