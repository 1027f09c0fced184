/** `rostersync device`: runs a device peer until interrupted. */
import { readFile } from 'node:fs/promises'
import { createDevice } from '../peers/create-device.js'
import { CliError, parse, parseDuration } from './args.js'
import type { Command } from './main.js'

const help = `Usage: rostersync device --id <id> [options]

Runs a device peer: LevelDB in --data, syncing with the server over WebSocket.

Options:
  --id <id>          the device's stable id, e.g. its serial number (required)
  --name <name>      a display name (default: the id)
  --server <url>     the server's WebSocket URL (default ws://127.0.0.1:4400)
  --data <dir>       data directory (default ./device-<id>)
  --site-key <key>   the site's secret (or ROSTERSYNC_SITE_KEY)
  --site-key-file <file>  read the site's secret from a file (e.g. the
                     server's <data>/site-key), so it stays out of the
                     process list and shell history
  --mode <mode>      live (default: changes flow as they happen) or periodic
  --delta-interval <dur>  time between delta syncs (default 30m)
  --retention <dur>  wipe the roster after this long unused (default 10d)
  --json             print state changes as JSON lines

Prints the link state, each sync direction's status and the roster size
whenever they change. Until its first full sync completes the device works
online only, and says so.
  -h, --help         this help`

export const deviceCommand: Command = {
  summary: 'run a device peer that syncs with the server',
  help,
  async run(argv) {
    const { values } = parse(argv, {
      id: { type: 'string' },
      name: { type: 'string' },
      server: { type: 'string', default: 'ws://127.0.0.1:4400' },
      data: { type: 'string' },
      'site-key': { type: 'string' },
      'site-key-file': { type: 'string' },
      mode: { type: 'string', default: 'live' },
      'delta-interval': { type: 'string' },
      retention: { type: 'string' },
      json: { type: 'boolean', default: false },
    })
    if (values.mode !== 'live' && values.mode !== 'periodic')
      throw new CliError(`--mode is live or periodic, not ${values.mode}`)
    const deltaIntervalMs =
      values['delta-interval'] === undefined ? undefined : parseDuration(values['delta-interval'])
    const retentionMs = values.retention === undefined ? undefined : parseDuration(values.retention)
    if (values.id === undefined)
      throw new CliError('--id is required (the device id, e.g. its serial number)')
    const siteKey = await siteKeyOf(values['site-key'], values['site-key-file'])
    const device = await createDevice({
      id: values.id,
      dataDir: values.data ?? `./device-${values.id}`,
      server: values.server,
      ...(values.name === undefined ? {} : { name: values.name }),
      ...(siteKey === undefined || siteKey === '' ? {} : { siteKey }),
      mode: values.mode,
      ...(deltaIntervalMs === undefined ? {} : { deltaIntervalMs }),
      ...(retentionMs === undefined ? {} : { retentionMs }),
    })
    // Reads through the replica: polling the users API would count as use
    // and keep the retention countdown from ever running out.
    const snapshot = () => {
      const status = device.sync.status()
      return {
        device: device.id,
        link: status.link,
        serverToDevice: status.serverToDevice.state,
        deviceToServer: status.deviceToServer.state,
        offlineReady: status.offlineReady,
        users: device.replica.list().length,
        ...(status.warning === undefined ? {} : { warning: status.warning }),
        ...(status.deviceToServer.error === undefined
          ? {}
          : { error: status.deviceToServer.error.code }),
      }
    }
    const report = (): void => {
      const state = snapshot()
      console.log(
        values.json
          ? JSON.stringify(state)
          : `device ${state.device}: ${state.link}; server→device ${state.serverToDevice}, device→server ${state.deviceToServer}${state.error === undefined ? '' : ` (${state.error})`}; ${state.users} user(s)${state.warning === undefined ? '' : `\n  ${state.warning}`}`,
      )
    }
    report()
    const stopped = new Promise<void>((resolve) => {
      process.once('SIGINT', () => resolve())
      process.once('SIGTERM', () => resolve())
    })
    let last = ''
    // Report state changes as they happen, checking twice a second.
    const ticker = setInterval(() => {
      const now = JSON.stringify(snapshot())
      if (now !== last) report()
      last = now
      if (device.serverLink?.state === 'refused') process.kill(process.pid, 'SIGTERM')
    }, 500)
    await stopped
    clearInterval(ticker)
    const refused = device.serverLink?.state === 'refused'
    await device.close()
    if (refused)
      throw new CliError(
        'the server refused this device (site key, revoked, id conflict, or replaced by a newer connection with its id)',
        1,
      )
  },
}

/** The site key from --site-key, --site-key-file or ROSTERSYNC_SITE_KEY (in that order). */
async function siteKeyOf(
  given: string | undefined,
  file: string | undefined,
): Promise<string | undefined> {
  if (given !== undefined && file !== undefined)
    throw new CliError('--site-key and --site-key-file exclude each other')
  if (file !== undefined) {
    try {
      const key = (await readFile(file, 'utf8')).trim()
      if (key === '') throw new CliError(`--site-key-file ${file} is empty`)
      return key
    } catch (error) {
      if (error instanceof CliError) throw error
      throw new CliError(`cannot read --site-key-file ${file}: ${(error as Error).message}`)
    }
  }
  return given ?? process.env.ROSTERSYNC_SITE_KEY
}
