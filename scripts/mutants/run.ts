/**
 * `npm run mutants`: applies each deliberate bug of scripts/mutants/list.ts
 * alone, to a copy of the checkout, runs the tests and simulator seeds it
 * lists until one fails, and reports which caught it and how long that
 * took. The catchers are first run on an unmutated copy (a catcher that
 * fails there proves nothing). Exits non-zero when a mutant survives, a
 * snippet is not found, or a baseline fails. docs/MUTANTS.md.
 */
import { loadavg } from 'node:os'
import { dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { catcherLabel, killRunning, runCatcher, type CatcherRun } from './catchers.js'
import { MUTANTS, type Catcher, type Mutant } from './list.js'
import { prepare } from './prepare.js'
import { formatTable, type MutantResult } from './report.js'
import {
  checkoutFiles,
  copyTree,
  productFiles,
  removeLeftCopies,
  removeTree,
  writeFiles,
} from './tree.js'

const HELP = `Usage: npm run mutants -- [options]

Applies each deliberate bug of scripts/mutants/list.ts alone to a copy of the
checkout (the checkout itself is never written), runs the tests and simulator
seeds listed for it in order until one fails, and reports which caught it and
the seconds that took. The catchers are first run on an unmutated copy.

Options:
  --only <name>      only this mutant (repeat, or comma-separate, for more)
  --list             list the mutants and check that every snippet is found
  --json             print only the JSON line (no table)
  --timeout <s>      bound of one catcher run, in seconds (default 600);
                     a catcher that runs out of time counts as caught
  --no-baseline      skip the unmutated run (only while writing a mutant)
  --keep             keep the copies (their paths are printed)
  -h, --help         this help

Exit status: 0 when every mutant was caught; 1 when one survived, a snippet
was not found or matched twice, or a catcher failed on the unmutated tree;
2 on bad options. docs/MUTANTS.md says how to add a mutant.`

interface Options {
  readonly only: readonly string[]
  readonly list: boolean
  readonly json: boolean
  readonly timeoutMs: number
  readonly baseline: boolean
  readonly keep: boolean
}

class UsageError extends Error {}

function parseOptions(argv: string[]): Options | 'help' {
  const { values } = parseArgs({
    args: argv,
    options: {
      only: { type: 'string', multiple: true },
      list: { type: 'boolean' },
      json: { type: 'boolean' },
      timeout: { type: 'string' },
      'no-baseline': { type: 'boolean' },
      keep: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  })
  if (values.help === true) return 'help'
  const only = (values.only ?? []).flatMap((v) => v.split(',')).filter((v) => v !== '')
  const unknown = only.filter((name) => !MUTANTS.some((m) => m.name === name))
  if (unknown.length > 0) throw new UsageError(`no mutant named ${unknown.join(', ')} (see --list)`)
  const timeoutS = values.timeout === undefined ? 600 : Number(values.timeout)
  if (!Number.isFinite(timeoutS) || timeoutS <= 0)
    throw new UsageError('--timeout takes seconds > 0')
  return {
    only,
    list: values.list === true,
    json: values.json === true,
    timeoutMs: timeoutS * 1000,
    baseline: values['no-baseline'] !== true,
    keep: values.keep === true,
  }
}

const round = (seconds: number): number => Math.round(seconds * 10) / 10

const log = (line: string): void => {
  process.stderr.write(`${line}\n`)
}

/** Runs every distinct catcher of `mutants` on an unmutated copy; returns the failed ones. */
async function baseline(
  root: string,
  files: readonly string[],
  mutants: readonly Mutant[],
  options: Options,
): Promise<{ failed: Map<string, CatcherRun>; seconds: number }> {
  const catchers = new Map<string, Catcher>()
  for (const m of mutants) for (const c of m.catchers) catchers.set(catcherLabel(c), c)
  const failed = new Map<string, CatcherRun>()
  const started = performance.now()
  const copy = await copyTree(root, files)
  try {
    for (const [label, catcher] of catchers) {
      const run = await runCatcher(catcher, copy, options.timeoutMs)
      // A test filter that selects nothing passes: it would catch nothing.
      const empty = run.outcome === 'pass' && run.passed === 0
      log(
        `baseline  ${label}: ${empty ? 'NO TESTS RAN' : run.outcome} (${run.seconds.toFixed(1)} s)`,
      )
      if (run.outcome !== 'pass' || empty)
        failed.set(label, empty ? { ...run, outcome: 'fail', detail: 'no test matched' } : run)
    }
  } finally {
    if (options.keep) log(`kept ${copy}`)
    else await removeTree(copy)
  }
  return { failed, seconds: (performance.now() - started) / 1000 }
}

/** Applies one mutant to a fresh copy and runs its catchers until one fails. */
async function runMutant(
  root: string,
  files: readonly string[],
  mutant: Mutant,
  changed: ReadonlyMap<string, string>,
  options: Options,
): Promise<MutantResult> {
  const copy = await copyTree(root, files)
  const runs: Array<MutantResult['runs'][number]> = []
  let seconds = 0
  try {
    await writeFiles(copy, changed)
    for (const catcher of mutant.catchers) {
      const label = catcherLabel(catcher)
      const run = await runCatcher(catcher, copy, options.timeoutMs)
      seconds += run.seconds
      runs.push({
        catcher: label,
        outcome: run.outcome,
        seconds: Math.round(run.seconds * 10) / 10,
        detail: run.detail.slice(0, 500),
      })
      log(
        `${mutant.name}  ${label}: ${run.outcome} (${run.seconds.toFixed(1)} s) ${run.detail.slice(0, 300)}`,
      )
      if (run.outcome !== 'pass') {
        return {
          name: mutant.name,
          status: 'caught',
          caughtBy: label,
          seconds: round(seconds),
          runs,
        }
      }
    }
    return { name: mutant.name, status: 'survived', seconds: round(seconds), runs }
  } finally {
    if (options.keep) log(`kept ${copy}`)
    else await removeTree(copy)
  }
}

function printList(
  mutants: readonly Mutant[],
  prepared: Map<string, Map<string, string> | string>,
): void {
  for (const m of mutants) {
    const state = prepared.get(m.name)
    const where =
      typeof state === 'string' ? `NOT APPLICABLE: ${state}` : [...(state?.keys() ?? [])].join(', ')
    console.log(`${m.name}\n  bug: ${m.bug}\n  in: ${where}`)
    for (const c of m.catchers) console.log(`  caught by: ${catcherLabel(c)}`)
  }
}

async function main(argv: string[]): Promise<number> {
  let options: Options | 'help'
  try {
    options = parseOptions(argv)
  } catch (error) {
    log(`mutants: ${error instanceof Error ? error.message : String(error)}`)
    return 2
  }
  if (options === 'help') {
    console.log(HELP)
    return 0
  }
  const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')
  const files = checkoutFiles(root)
  const only = options.only
  const mutants = only.length === 0 ? MUTANTS : MUTANTS.filter((m) => only.includes(m.name))
  if (options.list) {
    const prepared = prepare(mutants, await productFiles(root, files))
    printList(mutants, prepared)
    return [...prepared.values()].every((state) => typeof state !== 'string') ? 0 : 1
  }
  // One snapshot of the checkout at the start: every copy is made from it,
  // so edits to the checkout while the run goes do not mix into it.
  const snapshot = await copyTree(root, files)
  try {
    return await runAll(snapshot, files, mutants, options)
  } finally {
    await removeTree(snapshot)
  }
}

/** Runs the baseline and then each mutant, from `source` (a snapshot); prints the report. */
async function runAll(
  source: string,
  files: readonly string[],
  mutants: readonly Mutant[],
  options: Options,
): Promise<number> {
  const started = performance.now()
  const loadBefore = loadavg()
  const prepared = prepare(mutants, await productFiles(source, files))
  for (const state of prepared.values()) if (typeof state === 'string') log(state)
  const runnable = mutants.filter((m) => typeof prepared.get(m.name) !== 'string')
  const base = options.baseline
    ? await baseline(source, files, runnable, options)
    : { failed: new Map<string, CatcherRun>(), seconds: 0 }
  const results: MutantResult[] = []
  for (const mutant of mutants) {
    const state = prepared.get(mutant.name)
    if (typeof state === 'string') {
      results.push({
        name: mutant.name,
        status: 'not-applied',
        seconds: 0,
        runs: [],
        detail: state,
      })
      continue
    }
    const failedBase = mutant.catchers.map(catcherLabel).filter((label) => base.failed.has(label))
    if (failedBase.length > 0) {
      const why = failedBase.map((l) => `${l}: ${base.failed.get(l)?.detail ?? ''}`).join('; ')
      results.push({
        name: mutant.name,
        status: 'baseline-failed',
        seconds: 0,
        runs: [],
        detail: why,
      })
      continue
    }
    results.push(await runMutant(source, files, mutant, state as Map<string, string>, options))
  }
  for (const [label, run] of base.failed) log(`baseline failure of ${label}:\n${run.tail}`)
  const load = (values: number[]): number[] => values.map((l) => Math.round(l * 100) / 100)
  const summary = {
    ok: results.every((r) => r.status === 'caught'),
    totalSeconds: round((performance.now() - started) / 1000),
    baselineSeconds: round(base.seconds),
    loadAverage: { before: load(loadBefore), after: load(loadavg()) },
    mutants: results,
  }
  if (!options.json) console.log(formatTable(results, summary))
  console.log(JSON.stringify(summary))
  return summary.ok ? 0 : 1
}

// Interrupted: the catchers' process groups and the copies go too.
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    killRunning()
    removeLeftCopies()
    log(`mutants: interrupted (${signal})`)
    process.exit(130)
  })
}

process.exitCode = await main(process.argv.slice(2))
