/** `rostersync devices`: list a site's devices, revoke one. */
import { CliError, parse, toJson } from './args.js'
import type { Command } from './main.js'
import { openRoster } from './roster-access.js'

const help = `Usage: rostersync devices [list] [--name <part>] | devices revoke <id>

  list             registered devices: id, name, last seen, connected, revoked
  revoke <id>      refuse a device from now on (its connections close)

Options:
  --name <part>    only devices whose name contains this (case-insensitive)
  --data <dir>     the server's data directory (default ./data)
  --server <url>   a running server's URL, e.g. http://127.0.0.1:4400
  --token <token>  the server's admin token
  --json           print JSON (one object per line for list)
  -h, --help       this help`

export const devicesCommand: Command = {
  summary: 'list devices (filter by name), revoke a device',
  help,
  async run(argv) {
    const { values, positionals } = parse(argv, {
      name: { type: 'string' },
      data: { type: 'string', default: './data' },
      server: { type: 'string' },
      token: { type: 'string' },
      json: { type: 'boolean', default: false },
    })
    const [action = 'list', id] = positionals
    if (action !== 'list' && action !== 'revoke')
      throw new CliError(`unknown action ${action}; list or revoke`)
    const roster = await openRoster({
      data: values.data,
      server: values.server,
      token: values.token,
    })
    try {
      if (action === 'revoke') {
        if (id === undefined) throw new CliError('which device? rostersync devices revoke <id>')
        if (!(await roster.revoke(id))) throw new CliError(`no device ${id}`, 1)
        console.log(values.json ? toJson({ ok: true }) : `device ${id} revoked`)
        return
      }
      const devices = await roster.devices(values.name)
      for (const d of devices) {
        if (values.json) console.log(toJson(d))
        else {
          const seen = new Date(d.lastSeen).toISOString()
          const flags = [d.connected ? 'connected' : 'offline', d.revoked ? 'REVOKED' : '']
            .filter(Boolean)
            .join(' ')
          console.log(`${d.id.padEnd(16)} ${d.name.padEnd(24)} last seen ${seen}  ${flags}`)
        }
      }
      if (!values.json) console.log(`${devices.length} device(s)`)
    } finally {
      await roster.close()
    }
  },
}
