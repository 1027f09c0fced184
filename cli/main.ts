/**
 * The `rostersync` command line. Each command parses its own flags, has
 * `--help`, prints data as a table or with `--json`, and on bad input exits
 * non-zero with one line on stderr.
 */
import { readFileSync } from 'node:fs'
import { RostersyncError } from '../core/errors.js'
import { CliError } from './args.js'
import { deviceCommand } from './device-command.js'
import { devicesCommand } from './devices-command.js'
import { eventsCommand } from './events-command.js'
import { serverCommand } from './server-command.js'
import { simCommand } from './sim-command.js'
import { usersCommand } from './users-command.js'
import { exportCommand } from './export-command.js'
import { importCommand } from './import-command.js'
import { benchCommand } from './bench-command.js'
import { compactCommand } from './compact-command.js'

/** One command of the CLI. */
export interface Command {
  readonly summary: string
  readonly help: string
  run(argv: string[]): Promise<void>
}

const commands: Record<string, Command> = {
  server: serverCommand,
  device: deviceCommand,
  users: usersCommand,
  devices: devicesCommand,
  events: eventsCommand,
  sim: simCommand,
  export: exportCommand,
  import: importCommand,
  bench: benchCommand,
  compact: compactCommand,
}

const usage = (): string =>
  [
    'rostersync — a replicated user roster: the server wins, devices fill vacant fields, device deletes stay local.',
    '',
    'Usage: rostersync <command> [options]   (rostersync <command> --help for its options;',
    '       rostersync --version)',
    '',
    'Commands:',
    ...Object.entries(commands).map(([name, c]) => `  ${name.padEnd(10)} ${c.summary}`),
  ].join('\n')

/**
 * A message on one line: a validation error lists its problems one per line
 * (`✖ Invalid option … → at status`), parseArgs explains on three; every
 * line is kept, joined with "; ".
 */
export function oneLine(message: string): string {
  return message
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '')
    .reduce(
      (text, line) =>
        text === '' ? line : /[.;:]$/.test(text) ? `${text} ${line}` : `${text}; ${line}`,
      '',
    )
}

/** Runs the CLI with `argv` (without node and script). */
export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    // `rostersync help users`: that command's help.
    const asked = name === 'help' && rest[0] !== undefined ? commands[rest[0]] : undefined
    console.log(asked?.help ?? usage())
    return name === undefined ? 2 : 0
  }
  if (name === '--version' || name === '-V' || name === 'version') {
    console.log(`rostersync ${version()}`)
    return 0
  }
  const command = commands[name]
  if (command === undefined) {
    console.error(`rostersync: unknown command ${JSON.stringify(name)}; see rostersync --help`)
    return 2
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    console.log(command.help)
    return 0
  }
  try {
    await command.run(rest)
    return 0
  } catch (error) {
    if (error instanceof CliError) {
      // An empty message: the failure was told already (a child's own line).
      if (error.message !== '') console.error(`rostersync ${name}: ${oneLine(error.message)}`)
      return error.exitCode
    }
    if (error instanceof RostersyncError) {
      console.error(`rostersync ${name}: ${error.code}: ${oneLine(error.message)}`)
      return 1
    }
    throw error
  }
}

const invokedDirectly =
  process.argv[1] !== undefined && import.meta.url.endsWith(process.argv[1].replace(/\\/g, '/'))
if (invokedDirectly || process.env.ROSTERSYNC_CLI === '1') {
  // A reader that stops early (`rostersync users list | head -1`) closes
  // the pipe: the command ends quietly with 141, as a Unix tool killed by
  // SIGPIPE does (not with the stack trace of an unhandled EPIPE), and a
  // script sees that not all of it was read (a passphrase printed last).
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code !== 'EPIPE') throw error
    process.exit(141)
  })
  // Warnings in one line each, without Node's "(Use `node --trace-warnings`
  // …)"; the open site's is the command's own WARNING line already
  // (`server --open` printed two, a probe).
  process.removeAllListeners('warning')
  const quiet = process.env.NODE_NO_WARNINGS === '1' || process.execArgv.includes('--no-warnings')
  process.on('warning', (warning: Error & { code?: string }) => {
    if (!quiet && warning.code !== 'ROSTERSYNC_OPEN_SITE')
      console.error(`rostersync: warning: ${oneLine(warning.message)}`)
  })
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code
    },
    (error: unknown) => {
      console.error(`rostersync: ${(error as Error).stack ?? String(error)}`)
      process.exitCode = 1
    },
  )
}

/** The package's version (package.json, beside the sources or the build). */
function version(): string {
  for (const path of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(path, import.meta.url), 'utf8')) as {
        name?: string
        version?: string
      }
      if (pkg.name === 'rostersync' && typeof pkg.version === 'string') return pkg.version
    } catch {
      // Not this layout: the next.
    }
  }
  return 'unknown'
}
