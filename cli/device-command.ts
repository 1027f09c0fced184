/**
 * `rostersync device`: runs a device peer until interrupted, or, with an
 * action (`--full`, `--delta`, `--list`, `--status`), opens a stopped
 * device, does it and exits.
 */
import { existsSync } from 'node:fs'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { DeviceOptions, DevicePeer } from '../peers/create-device.js'
import type { UserView } from '../core/resolve.js'
import { CliError, parse, parseDuration, parseInteger, toJson } from './args.js'
import { printTable } from './table.js'
import type { Command } from './main.js'
import { deviceIdOf, openDevice, siteKeyOf } from './open-device.js'

const help = `Usage: rostersync device --id <id> [options] [action]

Runs a device peer: LevelDB in --data, syncing with the server over WebSocket
and, with --lan or --lan-peer, directly with other devices (libp2p).

Options:
  --id <id>          the device's stable id, e.g. its serial number (required,
                     unless --data already names its device)
  --name <name>      a display name (default: the id)
  --server <url>     the server's WebSocket URL (default: the one this device
                     was last run with, kept in <data>/server-url; else
                     ws://127.0.0.1:4400)
  --data <dir>       data directory (default ./device-<id>)
  --site-key <key>   the site's secret (or ROSTERSYNC_SITE_KEY)
  --site-key-file <file>  read the site's secret from a file (e.g. the
                     server's <data>/site-key), so it stays out of the
                     process list and shell history
  --mode <mode>      live (default: changes flow as they happen) or periodic
  --delta-interval <dur>  time between delta syncs (default 30m, at least 1s)
  --retention <dur>  wipe the roster after this long unused (default 10d)
  --json             print state changes (and actions' output) as JSON lines

LAN (needs the site key, which keys the private network):
  --lan              sync with other devices on the LAN, found by mDNS
  --lan-peer <addr>  dial this device's multiaddr as well (repeatable; without
                     --lan, only the peers named are dialled, no mDNS)
  --lan-port <n>     TCP port the LAN node listens on (default: a free one)
  --lan-host <addr>  interface the LAN node listens on (default 127.0.0.1;
                     0.0.0.0 for every interface)
  Any of these turns LAN sync on; mDNS only with --lan.
  The device prints its LAN multiaddrs once listening (give one to another
  device's --lan-peer).

Actions (on a stopped device: open its data, act, print, exit):
  --full             run a full sync with the server (push, clear, fetch all)
  --delta            run a delta sync (only what each side lacks)
  --list             list the device's users (its view), ordered by id
  --status           print each sync direction's status and the roster size
  Several may be given: syncs run first, then --list and --status.
  --list and --status alone never connect to the server.
  -h, --help         this help

While running: kill -USR1 <pid> runs a full sync, kill -USR2 <pid> a delta.
Prints the link state, each sync direction's status and the roster size
whenever they change; while the server is out of reach, why (the connection
error, or the close code and reason) and when the next attempt is due.
Until its first full sync completes the device works online only, and says
so.`

const flags = {
  id: { type: 'string' },
  name: { type: 'string' },
  server: { type: 'string' },
  data: { type: 'string' },
  'site-key': { type: 'string' },
  'site-key-file': { type: 'string' },
  mode: { type: 'string', default: 'live' },
  'delta-interval': { type: 'string' },
  retention: { type: 'string' },
  json: { type: 'boolean', default: false },
  lan: { type: 'boolean', default: false },
  'lan-peer': { type: 'string', multiple: true },
  'lan-port': { type: 'string' },
  'lan-host': { type: 'string' },
  full: { type: 'boolean', default: false },
  delta: { type: 'boolean', default: false },
  list: { type: 'boolean', default: false },
  status: { type: 'boolean', default: false },
} as const

type Values = ReturnType<typeof parse<typeof flags>>['values']

export const deviceCommand: Command = {
  summary: 'run a device peer (server and LAN sync), or sync / list a stopped one',
  help,
  async run(argv) {
    const { values, positionals } = parse(argv, flags)
    if (positionals.length > 0) throw new CliError(`unexpected argument ${positionals[0]}`)
    const options = await deviceOptions(values)
    const syncs = values.full || values.delta
    const oneShot = syncs || values.list || values.status
    // A look at a stopped device reads it: a mistyped folder is not a new
    // device (it made one, key and all, and listed 0 users).
    const dataDir = options.dataDir ?? ''
    if (oneShot && !syncs && !existsSync(dataDir))
      throw new CliError(`no data directory ${dataDir} (no device there to list)`, 1)
    // Listing or reading the status of a stopped device needs no network.
    const { server: _server, lan: _lan, ...offline } = options
    const device = await openDevice(oneShot && !syncs ? offline : options)
    // Remembered: `device --data <dir> --full` later reaches the same server
    // (it tried the default port, a probe). Not by a look (--list, --status),
    // which never connects: it neither checks a URL nor replaces the one kept.
    try {
      if (values.server !== undefined && !(oneShot && !syncs))
        await rememberServer(dataDir, values.server)
      if (oneShot) await act(device, values)
      else await runUntilStopped(device, values.json)
    } finally {
      await device.close()
    }
  },
}

/** The server a device is run with when none was ever given. */
const DEFAULT_SERVER = 'ws://127.0.0.1:4400'
/** Where a device's data directory keeps the server it was last run with. */
const SERVER_URL_FILE = 'server-url'

/** The server URL kept in `dataDir` (see rememberServer), if any. */
async function rememberedServer(dataDir: string): Promise<string | undefined> {
  try {
    const url = (await readFile(join(dataDir, SERVER_URL_FILE), 'utf8')).trim()
    return url === '' ? undefined : url
  } catch {
    return undefined
  }
}

/** Keeps `url` in `dataDir` as the server this device was run with. */
async function rememberServer(dataDir: string, url: string): Promise<void> {
  if ((await rememberedServer(dataDir)) === url) return
  await writeFile(join(dataDir, SERVER_URL_FILE), `${url}\n`).catch(() => {
    // Best effort: the next run names --server again.
  })
}

/** A duration flag that must be above 0. */
function positiveDuration(name: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined
  const ms = parseDuration(text)
  if (!(ms > 0)) throw new CliError(`--${name} must be above 0, got ${JSON.stringify(text)}`)
  return ms
}

/** The shortest --delta-interval taken. */
const DELTA_INTERVAL_MIN_MS = 1_000

/** The createDevice options the flags ask for. */
async function deviceOptions(values: Values): Promise<DeviceOptions> {
  if (values.mode !== 'live' && values.mode !== 'periodic')
    throw new CliError(`--mode is live or periodic, not ${values.mode}`)
  const deltaIntervalMs = positiveDuration('delta-interval', values['delta-interval'])
  // Shorter, a device asks its server faster than it answers any device
  // (netLimits.step1AnswersPerSecondMax): --delta-interval 1ms spun both.
  if (deltaIntervalMs !== undefined && deltaIntervalMs < DELTA_INTERVAL_MIN_MS)
    throw new CliError(
      `--delta-interval must be at least 1s, got ${JSON.stringify(values['delta-interval'])}`,
    )
  const retentionMs = positiveDuration('retention', values.retention)
  const id = values.data === undefined ? values.id : deviceIdOf(values.data, values.id)
  if (id === undefined)
    throw new CliError('--id is required (the device id, e.g. its serial number)')
  const dataDir = values.data ?? `./device-${id}`
  const siteKey = await siteKeyOf(values['site-key'], values['site-key-file'])
  const peers = values['lan-peer'] ?? []
  const lanPort = parseInteger('lan-port', values['lan-port'], 0, 65535)
  const lanWanted =
    values.lan ||
    peers.length > 0 ||
    values['lan-port'] !== undefined ||
    values['lan-host'] !== undefined
  if (lanWanted && siteKey === undefined)
    throw new CliError(
      'LAN sync needs the site key (--site-key, --site-key-file or ROSTERSYNC_SITE_KEY)',
    )
  return {
    id,
    dataDir,
    server: values.server ?? (await rememberedServer(dataDir)) ?? DEFAULT_SERVER,
    ...(values.name === undefined ? {} : { name: values.name }),
    ...(siteKey === undefined ? {} : { siteKey }),
    mode: values.mode,
    ...(deltaIntervalMs === undefined ? {} : { deltaIntervalMs }),
    ...(retentionMs === undefined ? {} : { retentionMs }),
    ...(lanWanted
      ? {
          lan: {
            enabled: true,
            mdns: values.lan,
            ...(peers.length === 0 ? {} : { peers }),
            ...(lanPort === undefined ? {} : { port: lanPort }),
            ...(values['lan-host'] === undefined ? {} : { host: values['lan-host'] }),
          },
        }
      : {}),
  }
}

/** The one-shot actions, in order: syncs, then the list and the status. */
async function act(device: DevicePeer, values: Values): Promise<void> {
  const json = values.json
  // Each sync asked for waits for the device's own follow-up too (a
  // generation move's carried writes, pushed by a round it starts itself):
  // cut by the close, it was the status kept, failed, after the sync asked
  // for had succeeded (an operator probe).
  if (values.full) {
    await device.sync.full()
    await device.sync.whenIdle()
    console.log(json ? toJson({ sync: 'full', ok: true }) : 'full sync: done')
  }
  if (values.delta) {
    await device.sync.delta()
    await device.sync.whenIdle()
    console.log(json ? toJson({ sync: 'delta', ok: true }) : 'delta sync: done')
  }

  if (values.list) {
    // Through the replica: an operator's look is not the device's use.
    const users = device.replica.list()
    if (json) for (const user of users) console.log(toJson(user))
    else printUsers(users)
  }
  if (values.status) {
    const state = snapshot(device)
    console.log(json ? JSON.stringify(state) : describe(state))
  }
}

function printUsers(users: UserView[]): void {
  printTable<UserView>(['id', 'name', 'email', 'status'], users, 'user', toJson)
}

type Snapshot = ReturnType<typeof snapshot>

/** What the device reports; reads through the replica (not counted as use). */
function snapshot(device: DevicePeer) {
  const status = device.sync.status()
  return {
    device: device.id,
    // What an operator compares before approving it (a probe: only the
    // long-running mode's first line said it).
    keyFingerprint: device.keyFingerprint,
    link: status.link,
    serverToDevice: status.serverToDevice.state,
    deviceToServer: status.deviceToServer.state,
    offlineReady: status.offlineReady,
    users: device.replica.shown.list().length, // as users.list shows them (kept through a fetch)
    ...(status.lastFullSyncAt === undefined ? {} : { lastFullSyncAt: status.lastFullSyncAt }),
    ...(status.warning === undefined ? {} : { warning: status.warning }),
    ...(status.deviceToServer.error === undefined
      ? {}
      : { error: status.deviceToServer.error.code }),
    // Why the link is down and when it tries again (issue 10: an operator
    // watching a device that cannot reach its server sees both).
    ...(status.waiting === undefined ? {} : { waiting: status.waiting }),
    ...(status.nextAttemptAt === undefined ? {} : { nextAttemptAt: status.nextAttemptAt }),
    // LAN links and the last one refused (a probe: the CLI showed neither).
    ...(status.lan === undefined ? {} : { lan: status.lan }),
  }
}

function describe(state: Snapshot): string {
  return `device ${state.device}: ${state.link}; server→device ${state.serverToDevice}, device→server ${state.deviceToServer}${state.error === undefined ? '' : ` (${state.error})`}; ${state.users} user(s)${lanLine(state)}${waitLine(state)}${state.warning === undefined ? '' : `\n  ${state.warning}`}${pendingLine(state)}`
}

/** The key fingerprint to compare, on a line of its own, while the device waits for approval. */
function pendingLine(state: Snapshot): string {
  return state.error === 'PEER_PENDING'
    ? `\n  waiting for approval: key fingerprint ${state.keyFingerprint} (the operator compares it: rostersync devices approve ${state.device})`
    : ''
}

/** `; LAN: N peer(s)`, and the last LAN link refused on a line of its own. */
function lanLine(state: Snapshot): string {
  if (state.lan === undefined) return ''
  const { peers, lastError } = state.lan
  return `; LAN: ${peers} peer(s)${lastError === undefined ? '' : `\n  LAN refused: ${lastError.code}: ${lastError.message}`}`
}

/** `waiting: <reason>; next attempt at <time> (in N s)`, on a line of its own. */
function waitLine(state: Snapshot): string {
  if (state.waiting === undefined && state.nextAttemptAt === undefined) return ''
  const why = `waiting: ${state.waiting ?? state.link}`
  if (state.nextAttemptAt === undefined) return `\n  ${why}`
  const inSeconds = Math.max(0, Math.round((state.nextAttemptAt - Date.now()) / 1000))
  return `\n  ${why}; next attempt at ${new Date(state.nextAttemptAt).toISOString()} (in ${inSeconds} s)`
}

/** Runs until SIGINT / SIGTERM, reporting changes; SIGUSR1 / SIGUSR2 sync. */
async function runUntilStopped(device: DevicePeer, json: boolean): Promise<void> {
  /** The state last printed: a line is printed when it changes (it was printed twice at start). */
  let last = ''
  const report = (): void => {
    const state = snapshot(device)
    last = JSON.stringify(state)
    console.log(json ? last : describe(state))
  }
  // What the administrator compares with the registry before approving it.
  console.log(
    json
      ? JSON.stringify({ keyFingerprint: device.keyFingerprint })
      : `key fingerprint: ${device.keyFingerprint}`,
  )
  for (const address of device.lanAddresses)
    console.log(json ? JSON.stringify({ lan: address }) : `LAN: listening on ${address}`)
  report()
  const manual = (kind: 'full' | 'delta'): void => {
    const done = kind === 'full' ? device.sync.full() : device.sync.delta()
    done.then(
      () => console.log(json ? toJson({ sync: kind, ok: true }) : `${kind} sync: done`),
      (error: unknown) =>
        console.log(
          json
            ? toJson({ sync: kind, ok: false, error: (error as { code?: string }).code })
            : `${kind} sync failed: ${(error as Error).message}`,
        ),
    )
  }
  const onFull = (): void => manual('full')
  const onDelta = (): void => manual('delta')
  process.on('SIGUSR1', onFull)
  process.on('SIGUSR2', onDelta)
  const stopped = new Promise<void>((resolve) => {
    process.once('SIGINT', () => resolve())
    process.once('SIGTERM', () => resolve())
  })
  // Report state changes as they happen, checking twice a second.
  const ticker = setInterval(() => {
    if (JSON.stringify(snapshot(device)) !== last) report()
    if (device.serverLink?.state === 'refused') process.kill(process.pid, 'SIGTERM')
  }, 500)
  await stopped
  clearInterval(ticker)
  process.off('SIGUSR1', onFull)
  process.off('SIGUSR2', onDelta)
  if (device.serverLink?.state === 'refused') {
    // The refusal's own code and words (PEER_REVOKED, AUTH_FAILED, ...):
    // what the operator acts on.
    const status = device.sync.status()
    const error = status.serverToDevice.error ?? status.deviceToServer.error
    throw new CliError(
      error === undefined
        ? 'the server refused this device (site key, revoked, id conflict, or replaced by a newer connection with its id)'
        : `the server refused this device: ${error.code}: ${error.message}`,
      1,
    )
  }
}
