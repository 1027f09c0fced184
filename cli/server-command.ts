/** `rostersync server`: runs the server peer until interrupted. */
import { rm, writeFile } from 'node:fs/promises'
import { createServer } from '../server-peer/create-server.js'
import { serverInfoFile } from './roster-access.js'
import { parse, parseInteger } from './args.js'
import type { Command } from './main.js'

const help = `Usage: rostersync server [options]

Runs the site's server peer: LevelDB in --data, devices sync over WebSocket.

Options:
  --data <dir>       data directory (default ./data)
  --host <addr>      interface to listen on (default 127.0.0.1)
  --port <n>         port (default 4400; 0 picks a free one)
  --site-key <key>   secret devices must present to join (or ROSTERSYNC_SITE_KEY)
  --json             print where it listens as one JSON line
  -h, --help         this help`

export const serverCommand: Command = {
  summary: 'run the server peer (LevelDB + WebSocket sync)',
  help,
  async run(argv) {
    const { values } = parse(argv, {
      data: { type: 'string', default: './data' },
      host: { type: 'string', default: '127.0.0.1' },
      port: { type: 'string', default: '4400' },
      'site-key': { type: 'string' },
      json: { type: 'boolean', default: false },
    })
    const siteKey = values['site-key'] ?? process.env.ROSTERSYNC_SITE_KEY
    const server = await createServer({
      dataDir: values.data,
      host: values.host,
      port: parseInteger('port', values.port, 0, 65535) ?? 4400,
      ...(siteKey === undefined || siteKey === '' ? {} : { siteKey }),
    })
    const users = server.users.list().length
    // Local tools (rostersync users/events/devices) find the running server here.
    const info = serverInfoFile(values.data)
    await writeFile(info, JSON.stringify({ url: server.url, http: server.http, pid: process.pid }))
    if (values.json) {
      console.log(JSON.stringify({ url: server.url, http: server.http, data: values.data, users }))
    } else {
      console.log(
        `rostersync server listening on ${server.url} (data: ${values.data}, ${users} user(s))`,
      )
      console.log(
        `start a device:  npx rostersync device --id D1 --server ${server.url} --data ./dev1`,
      )
      console.log('stop with Ctrl-C')
    }
    await new Promise<void>((resolve) => {
      const stop = (): void => resolve()
      process.once('SIGINT', stop)
      process.once('SIGTERM', stop)
    })
    await rm(info, { force: true })
    await server.close()
    if (!values.json) console.log('server stopped cleanly')
  },
}
