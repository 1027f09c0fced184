/**
 * Running one catcher (a test file or a simulator seed) in a copy of the
 * checkout, in its own process group so that a hung run is killed whole.
 */
import { spawn } from 'node:child_process'
import { readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import type { Catcher } from './list.js'

/** How one run of a catcher ended. */
export interface CatcherRun {
  /** `pass`: it passed; `fail`: it failed (a mutant is caught); `timeout`: killed at the bound. */
  readonly outcome: 'pass' | 'fail' | 'timeout'
  readonly seconds: number
  /** Tests that ran and passed (vitest), or undefined for a simulator run. */
  readonly passed?: number
  /** What failed: test names, or the simulator's rules. */
  readonly detail: string
  /** The end of the output, for a report of a baseline that failed. */
  readonly tail: string
}

/** Process groups of the catchers running now (see killRunning). */
const running = new Set<number>()

/** Kills every catcher still running, whole process groups (on Ctrl-C of the run). */
export function killRunning(): void {
  for (const pid of running) {
    try {
      process.kill(-pid, 'SIGKILL')
    } catch {
      // Gone already.
    }
  }
  running.clear()
}

/** A catcher as one line: `test/x.test.ts > name` or `sim --seed 1 ...`. */
export function catcherLabel(catcher: Catcher): string {
  if ('sim' in catcher) return `sim ${catcher.sim.join(' ')}`
  const env = Object.entries(catcher.env ?? {}).map(([k, v]) => `${k}=${v} `)
  return `${env.join('')}${catcher.test}${catcher.name === undefined ? '' : ` > ${catcher.name}`}`
}

/** The command line of a catcher, run from the copy's root. */
export function catcherCommand(catcher: Catcher, jsonFile: string): string[] {
  if ('sim' in catcher) {
    return ['node_modules/.bin/tsx', 'bin/rostersync.js', 'sim', ...catcher.sim, '--json']
  }
  const filter = catcher.name === undefined ? [] : ['-t', catcher.name]
  return [
    'node_modules/.bin/vitest',
    'run',
    catcher.test,
    ...filter,
    '--reporter=json',
    `--outputFile=${jsonFile}`,
  ]
}

interface VitestJson {
  numPassedTests?: number
  numFailedTests?: number
  testResults?: Array<{
    assertionResults?: Array<{ status?: string; fullName?: string; title?: string }>
    message?: string
  }>
}

/** Failed test names from vitest's JSON report. */
function failedTests(report: VitestJson): string {
  const names: string[] = []
  for (const file of report.testResults ?? []) {
    for (const test of file.assertionResults ?? [])
      if (test.status === 'failed') names.push(test.fullName ?? test.title ?? '?')
    if ((file.assertionResults ?? []).length === 0 && file.message) names.push(file.message)
  }
  return names.join('; ')
}

/** The rules a simulator run broke, from its `--json` last line. */
function simRules(stdout: string): string {
  const last = stdout.trim().split('\n').at(-1) ?? ''
  try {
    const report = JSON.parse(last) as {
      violationCounts?: Record<string, number>
      notConverged?: string
    }
    const rules = Object.keys(report.violationCounts ?? {})
    return rules.join(', ') || report.notConverged || ''
  } catch {
    return ''
  }
}

/** Runs `catcher` in `dir` (a copy of the checkout); kills its process group after `timeoutMs`. */
export async function runCatcher(
  catcher: Catcher,
  dir: string,
  timeoutMs: number,
): Promise<CatcherRun> {
  const jsonFile = join(dir, '.mutant-vitest.json')
  await rm(jsonFile, { force: true })
  const [command, ...args] = catcherCommand(catcher, jsonFile)
  const started = performance.now()
  const child = spawn(command as string, args, {
    cwd: dir,
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      ...process.env,
      ...('env' in catcher ? catcher.env : {}),
      CI: '1',
      FORCE_COLOR: '0',
      NO_COLOR: '1',
    },
  })
  if (child.pid !== undefined) running.add(child.pid)
  let output = ''
  let stdout = ''
  const keep = (chunk: Buffer, toStdout: boolean): void => {
    const text = chunk.toString()
    if (toStdout) stdout = (stdout + text).slice(-200_000)
    output = (output + text).slice(-8_000)
  }
  child.stdout.on('data', (chunk: Buffer) => keep(chunk, true))
  child.stderr.on('data', (chunk: Buffer) => keep(chunk, false))
  let timedOut = false
  const timer = setTimeout(() => {
    timedOut = true
    if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL')
  }, timeoutMs)
  const [code, signal] = await new Promise<[number | null, string | null]>((resolve) => {
    child.on('close', (exit, killedBy) => resolve([exit, killedBy]))
    child.on('error', () => resolve([-1, null]))
  })
  clearTimeout(timer)
  if (child.pid !== undefined) running.delete(child.pid)
  // Whatever the catcher left running in its group (a server a test
  // spawned) goes with it.
  try {
    if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL')
  } catch {
    // The group is gone already.
  }
  const seconds = (performance.now() - started) / 1000
  const tail = output.slice(-3_000)
  if (timedOut)
    return { outcome: 'timeout', seconds, detail: `timed out after ${timeoutMs / 1000} s`, tail }
  if ('sim' in catcher) {
    const rules =
      simRules(stdout) || (signal === null ? `exit code ${String(code)}` : `killed by ${signal}`)
    return { outcome: code === 0 ? 'pass' : 'fail', seconds, detail: code === 0 ? '' : rules, tail }
  }
  let report: VitestJson = {}
  try {
    report = JSON.parse(await readFile(jsonFile, 'utf8')) as VitestJson
  } catch {
    // No report: vitest failed before it wrote one (the exit code says so).
  }
  const passed = report.numPassedTests ?? 0
  const failed = code !== 0 || (report.numFailedTests ?? 0) > 0
  const exit = signal === null ? `exit code ${String(code)}` : `killed by ${signal}`
  const detail = failed ? failedTests(report) || exit : ''
  return { outcome: failed ? 'fail' : 'pass', seconds, passed, detail, tail }
}
