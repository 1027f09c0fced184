/**
 * What every bench shares: the registry entry shape, running a measurement
 * in its own child process, temp dirs that are always removed, and plain
 * text tables. Benches measure and report; they never fail a run because a
 * target was missed (STYLE: timing is measured in bench/, never asserted).
 */
import { spawn } from 'node:child_process'
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { scriptArgs } from './build.js'

/** The project root (bench/..), where children are started so `--import tsx` resolves. */
export const PROJECT_ROOT = dirname(dirname(fileURLToPath(import.meta.url)))

/** Options every bench receives from `run.ts`. */
export interface BenchOptions {
  /** How many users to enrol or hold. */
  readonly users: number
  /**
   * How many times a timing bench repeats each measurement; it reports the
   * best run. On a shared machine the best run is the one least disturbed
   * by other work, so it is the most repeatable figure.
   */
  readonly runs: number
}

/** One registered bench. */
export interface Bench {
  /** Name used by `--only`. */
  readonly name: string
  /** One line: what it measures against what. */
  readonly summary: string
  /** Runs the bench, prints its tables and returns its figures for the final JSON line. */
  run(options: BenchOptions): Promise<Record<string, unknown>>
}

/** Users per `Promise.all` round / per baseline transaction, as issue 2 specifies. */
export const BATCH_USERS = 1_000

/** Options of {@link runChild}. */
export interface ChildOptions {
  /** Start node with `--expose-gc` (heap measurements). */
  readonly exposeGc?: boolean
  /** Extra node flags, e.g. `--cpu-prof`. */
  readonly nodeFlags?: readonly string[]
}

/**
 * Runs `bench/<script> ...args` in a fresh node process (compiled, or with
 * tsx's loader: bench/build.ts)
 * and returns the JSON object on the last line of its stdout. A fresh
 * process per measurement means no bench inherits another's heap, garbage
 * or JIT state. The child's stderr passes through so progress and crashes
 * show.
 */
export async function runChild<T>(
  script: string,
  args: readonly string[],
  options: ChildOptions = {},
): Promise<T> {
  const flags = [
    ...(options.exposeGc === true ? ['--expose-gc'] : []),
    ...(options.nodeFlags ?? []),
  ]
  const child = spawn(process.execPath, [...flags, ...scriptArgs(script), ...args], {
    cwd: PROJECT_ROOT,
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  let stdout = ''
  child.stdout.setEncoding('utf8')
  child.stdout.on('data', (chunk: string) => (stdout += chunk))
  const code = await new Promise<number | null>((resolve, reject) => {
    child.on('error', reject)
    child.on('close', resolve)
  })
  if (code !== 0) throw new Error(`bench/${script} ${args.join(' ')} exited with ${code}`)
  const last = stdout.trim().split('\n').at(-1) ?? ''
  try {
    return JSON.parse(last) as T
  } catch {
    throw new Error(`bench/${script} ${args.join(' ')} printed no JSON result: ${last}`)
  }
}

/** Runs `fn` with a fresh temp dir and removes the dir afterwards, whatever happens. */
export async function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'rostersync-bench-'))
  try {
    return await fn(dir)
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

/** Total size in bytes of the files under `dir`. */
export async function dirBytes(dir: string): Promise<number> {
  let total = 0
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    total += entry.isDirectory() ? await dirBytes(path) : (await stat(path)).size
  }
  return total
}

/** A table cell: text is left-aligned, numbers (and numeric text such as `1.50`) right-aligned. */
export type Cell = string | number

const NUMERIC = /^-?[\d.,]+x?$/

/** Prints a titled table with aligned columns. */
export function printTable(
  title: string,
  header: readonly string[],
  rows: readonly Cell[][],
): void {
  const text = [header, ...rows].map((row) => row.map((cell) => String(cell)))
  const widths = header.map((_, col) => Math.max(...text.map((row) => row[col]?.length ?? 0)))
  const line = (row: readonly string[], source: readonly Cell[]): string =>
    row
      .map((cell, col) => {
        const width = widths[col] ?? 0
        const numeric = typeof source[col] === 'number' || NUMERIC.test(cell)
        return numeric ? cell.padStart(width) : cell.padEnd(width)
      })
      .join('  ')
      .trimEnd()
  console.log(`\n${title}`)
  console.log(line(text[0] ?? [], header))
  console.log(widths.map((w) => '-'.repeat(w)).join('  '))
  rows.forEach((row, i) => console.log(line(text[i + 1] ?? [], row)))
}

/** Bytes as MB (10^6), one decimal. */
export const mb = (bytes: number): number => Math.round(bytes / 1e5) / 10

/** A ratio as text with two decimals, e.g. `1.50`. */
export const ratioText = (value: number): string => value.toFixed(2)

/** A number rounded to `digits` decimals. */
export const round = (value: number, digits = 2): number => {
  const scale = 10 ** digits
  return Math.round(value * scale) / scale
}

/** Prints a child's one JSON result line (the protocol {@link runChild} reads). */
export function emitResult(result: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(result)}\n`)
}

/** The `q` quantile (0..1) of `values`, nearest rank (NaN when empty). */
export function quantile(values: readonly number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] ?? NaN
}

/** Environment variable `name` as a positive integer, `fallback` when unset or empty (else exit 2). */
export function envInt(name: string, fallback: number): number {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return fallback
  return positiveIntArg(raw, name)
}

/** Parses a positive integer command-line argument, or exits with a one-line error. */
export function positiveIntArg(value: string | undefined, what: string): number {
  const n = Number(value)
  if (!Number.isSafeInteger(n) || n <= 0) {
    console.error(`${what} must be a positive integer, got ${JSON.stringify(value)}`)
    process.exit(2)
  }
  return n
}
