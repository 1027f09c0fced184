/**
 * Small helpers for the command line: typed option parsing on top of
 * `node:util`'s parseArgs, one-line errors, durations like `1d`.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util'
import { terminalSafeJson } from './table.js'

/** An error the CLI prints as one line and exits non-zero with. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 2,
  ) {
    super(message)
  }
}

type Options = NonNullable<ParseArgsConfig['options']>

/**
 * Parses `argv` against `options`; unknown flags are a `CliError`, and so is
 * a value option given twice (`--users u1 --users u2`): parseArgs would keep
 * the last one and silently drop the others.
 */
export function parse<O extends Options>(
  argv: string[],
  options: O,
): ReturnType<
  typeof parseArgs<{ args: string[]; options: O; allowPositionals: true; strict: true }>
> {
  let parsed
  try {
    parsed = parseArgs({
      args: withNegativeValues(argv, options),
      options,
      allowPositionals: true,
      strict: true,
      tokens: true,
    })
  } catch (error) {
    throw new CliError((error as Error).message)
  }
  const seen = new Set<string>()
  for (const token of parsed.tokens) {
    if (token.kind !== 'option' || token.value === undefined) continue
    if (options[token.name]?.multiple === true) continue
    if (seen.has(token.name))
      throw new CliError(
        `--${token.name} is given more than once; give it once (a list as one value, comma-separated, where the option takes one)`,
      )
    seen.add(token.name)
  }
  const { tokens: _tokens, ...result } = parsed
  return result
}

/**
 * `argv` with a negative number after a value option joined to it
 * (`--devices -1` as `--devices=-1`): parseArgs takes `-1` for a flag and
 * says the option's argument is "ambiguous", where the option's own check
 * says what it takes (a probe). Anything after `--` is left as it is.
 */
function withNegativeValues(argv: readonly string[], options: Options): string[] {
  const out: string[] = []
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string
    if (arg === '--') {
      out.push(...argv.slice(i))
      break
    }
    const name = arg.startsWith('--') && !arg.includes('=') ? arg.slice(2) : undefined
    const next = argv[i + 1]
    if (
      name !== undefined &&
      options[name]?.type === 'string' &&
      next !== undefined &&
      /^-\.?\d/.test(next)
    ) {
      out.push(`${arg}=${next}`)
      i++
    } else out.push(arg)
  }
  return out
}

/**
 * Parses `30s`, `15m`, `2h`, `1d` or `500ms`. A number needs its unit (but
 * 0): `--retention 10` read as 10 ms wiped a device's roster at once (a
 * black-box probe), where an operator meant days.
 */
export function parseDuration(text: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/.exec(text.trim())
  if (match === null)
    throw new CliError(`not a duration: ${JSON.stringify(text)} (try 30s, 15m, 2h, 1d)`)
  if (match[2] === undefined && Number(match[1]) !== 0)
    throw new CliError(
      `${JSON.stringify(text)} needs a unit: ${match[1]}ms, ${match[1]}s, ${match[1]}m, ${match[1]}h or ${match[1]}d`,
    )
  const unitMs = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[match[2] ?? 'ms'] ?? 1
  return Number(match[1]) * unitMs
}

/**
 * A decimal number as given on the command line, else NaN: Number() reads
 * `""` and `" "` as 0 (`--port ""` picked a random port), `0x10` as 16 and
 * `1e3` as 1000.
 */
export function decimal(text: string): number {
  return /^-?(\d+(\.\d*)?|\.\d+)$/.test(text) ? Number(text) : NaN
}

/** Parses an integer option within bounds. */
export function parseInteger(
  name: string,
  text: string | undefined,
  min: number,
  max: number,
): number | undefined {
  if (text === undefined) return undefined
  const value = decimal(text)
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new CliError(
      `--${name} must be an integer from ${min} to ${max}, got ${JSON.stringify(text)}`,
    )
  }
  return value
}

/** Parses a JSON object given on the command line. */
export function parseJsonObject(name: string, text: string | undefined): Record<string, unknown> {
  if (text === undefined) throw new CliError(`${name} is required (a JSON object)`)
  try {
    const value: unknown = JSON.parse(text)
    if (typeof value !== 'object' || value === null || Array.isArray(value))
      throw new Error('not an object')
    return value as Record<string, unknown>
  } catch {
    throw new CliError(`${name} must be a JSON object, e.g. '{"name":"Ann"}'`)
  }
}

/**
 * Renders a value for output: JSON with byte arrays shown as base64 (as the
 * HTTP API writes them), indented by `indent` spaces when given, with every
 * character a terminal would act on escaped.
 */
export function toJson(value: unknown, indent?: number): string {
  return terminalSafeJson(
    JSON.stringify(
      value,
      (_key, v: unknown) =>
        v instanceof Uint8Array ? { base64: Buffer.from(v).toString('base64') } : v,
      indent,
    ),
  )
}

/**
 * Why a data directory did not open, for a one-line error: another process
 * holds its lock (LevelDB's `LEVEL_LOCKED`, somewhere in the causes), with
 * `running` (e.g. "is the server running on it? Stop it first"), or the
 * storage's own message (permissions, a full disk, damage).
 */
export function openFailure(dataDir: string, error: Error, running: string): string {
  let cause: unknown = error
  for (let depth = 0; depth < 8 && cause instanceof Error; depth++) {
    if ((cause as { code?: unknown }).code === 'LEVEL_LOCKED')
      return `cannot open ${dataDir}: another process holds it (${running})`
    cause = cause.cause
  }
  return `cannot open ${dataDir}: ${error.message.split('\n')[0] ?? ''}`
}
