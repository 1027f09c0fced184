/** `rostersync compact`: a new generation of the site's document (history compaction, issue 13). */
import { CliError, parse } from './args.js'
import type { Command } from './main.js'
import { openRoster } from './roster-access.js'

const help = `Usage: rostersync compact [options]

Starts a new generation of the site's document: the live roster only (server
entries, live device entries, field policies, revocations), without the
history of overwrites and the retired Yjs clientIDs that slow every edit
down as a site ages. Nothing a view shows changes. Every connected device is
disconnected (close 4412) and comes back within 2 minutes, at a moment fixed
by its id, to move with one full sync; its local deletes, device-specific
values and unsent edits are kept. The server also does this by itself when
its document crosses the thresholds in core/limits.ts (generation*).

Options:
  --data <dir>     the server's data directory (default ./data); when a server runs
                   on it, its HTTP API is used, else the directory is opened directly
  --server <url>   a running server's HTTP (or WebSocket) URL, e.g. http://127.0.0.1:4400
  --token <token>  the server's admin token (default: <data>/admin-token or ROSTERSYNC_ADMIN_TOKEN)
  --json           print the result as JSON
  -h, --help       this help`

export const compactCommand: Command = {
  summary: "start a new generation of the site's document (drops its history)",
  help,
  async run(argv) {
    const { values, positionals } = parse(argv, {
      data: { type: 'string', default: './data' },
      server: { type: 'string' },
      token: { type: 'string' },
      json: { type: 'boolean', default: false },
    })
    if (positionals.length > 0) throw new CliError(`unexpected argument ${positionals[0]}`)
    const roster = await openRoster({
      data: values.data,
      server: values.server,
      token: values.token,
    })
    let result
    try {
      result = await roster.compactHistory()
    } finally {
      await roster.close()
    }
    if (values.json) {
      console.log(JSON.stringify(result))
      return
    }
    console.log(
      `generation ${result.generation}: ${result.clientIdsBefore} clientIDs before, ${result.clientIdsAfter} after; ` +
        `${result.bytesBefore} bytes stored before, ${result.bytesAfter} after; ${result.entries} entries kept; ` +
        `${result.devicesClosed} device(s) disconnected to move`,
    )
  },
}
