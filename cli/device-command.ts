/** `rostersync device`: runs a device peer until interrupted. */
import { createDevice } from '../peers/create-device.js'
import { CliError, parse } from './args.js'
import type { Command } from './main.js'

const help = `Usage: rostersync device --id <id> [options]

Runs a device peer: LevelDB in --data, syncing with the server over WebSocket.

Options:
  --id <id>          the device's stable id, e.g. its serial number (required)
  --name <name>      a display name (default: the id)
  --server <url>     the server's WebSocket URL (default ws://127.0.0.1:4400)
  --data <dir>       data directory (default ./device-<id>)
  --site-key <key>   the site's secret (or ROSTERSYNC_SITE_KEY)
  --json             print state changes as JSON lines
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
      json: { type: 'boolean', default: false },
    })
    if (values.id === undefined)
      throw new CliError('--id is required (the device id, e.g. its serial number)')
    const siteKey = values['site-key'] ?? process.env.ROSTERSYNC_SITE_KEY
    const device = await createDevice({
      id: values.id,
      dataDir: values.data ?? `./device-${values.id}`,
      server: values.server,
      ...(values.name === undefined ? {} : { name: values.name }),
      ...(siteKey === undefined || siteKey === '' ? {} : { siteKey }),
    })
    const report = (): void => {
      const state = {
        device: device.id,
        link: device.serverLink?.state,
        users: device.users.list().length,
      }
      console.log(
        values.json
          ? JSON.stringify(state)
          : `device ${state.device}: ${state.link}, ${state.users} user(s)`,
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
      const now = `${device.serverLink?.state}/${device.users.list().length}`
      if (now !== last) report()
      last = now
      if (device.serverLink?.state === 'refused') process.kill(process.pid, 'SIGTERM')
    }, 500)
    await stopped
    clearInterval(ticker)
    const refused = device.serverLink?.state === 'refused'
    await device.close()
    if (refused) throw new CliError('the server refused this device (site key or revoked)', 1)
  },
}
