/** `rostersync bench`: the benchmarks, as `npm run bench` runs them (bench/run.ts). */
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { CliError, parse, parseInteger } from './args.js'
import type { Command } from './main.js'

const help = `Usage: rostersync bench [options]

Runs the benchmarks (bench/run.ts, as npm run bench does) and prints each
bench's table, then one JSON line with every figure. A missed target is
reported, never a failing exit code; bad flags or a crashed bench exit
non-zero. Needs a source checkout (bench/ is not in the published package).
Timings depend on the machine: run it on a quiet one (see bench/README.md).

Options:
  --only <names>   comma-separated benches (admin, aging, enrol, fleet, flood, heap,
                   load, million, network, pin, signing, sim, variants)
  --users <n>      roster size (default 100000)
  --runs <n>       runs of each timing bench; the best is reported (default 1)
  --json           print only the final JSON line on stdout (tables go to stderr)
  -h, --help       this help`

/** bench/run.ts beside this file's package (from cli/ or from dist/cli/). */
function runner(): string {
  for (const relative of ['../bench/run.ts', '../../bench/run.ts']) {
    const path = fileURLToPath(new URL(relative, import.meta.url))
    if (existsSync(path)) return path
  }
  throw new CliError('the benchmarks need a source checkout of rostersync (bench/run.ts)', 1)
}

export const benchCommand: Command = {
  summary: 'run the benchmarks (as npm run bench does)',
  help,
  async run(argv) {
    const { values, positionals } = parse(argv, {
      only: { type: 'string' },
      users: { type: 'string' },
      runs: { type: 'string' },
      json: { type: 'boolean', default: false },
    })
    if (positionals.length > 0) throw new CliError(`unexpected argument ${positionals[0]}`)
    const users = parseInteger('users', values.users, 1, 10_000_000)
    const runs = parseInteger('runs', values.runs, 1, 100)
    const args = [
      ...(values.only === undefined ? [] : ['--only', values.only]),
      ...(users === undefined ? [] : ['--users', String(users)]),
      ...(runs === undefined ? [] : ['--runs', String(runs)]),
      ...(values.json ? ['--json'] : []),
    ]
    const script = runner()
    // From the package's root, where tsx and the benches' helpers resolve.
    const child = spawn(process.execPath, ['--import', 'tsx', script, ...args], {
      stdio: 'inherit',
      cwd: dirname(dirname(script)),
    })
    const code = await new Promise<number>((resolve) =>
      child.once('exit', (status, signal) => resolve(status ?? (signal === null ? 1 : 128))),
    )
    // The runner printed its own one-line error.
    if (code !== 0) throw new CliError('', code)
  },
}
