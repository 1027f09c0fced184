/** `rostersync server`: runs the server peer until interrupted. */
import { join } from 'node:path'
import { rm, writeFile } from 'node:fs/promises'
import { realpathSync } from 'node:fs'
import { resolve as resolvePath } from 'node:path'
import type { ServerOptions, ServerPeer } from '../server-peer/create-server.js'
import { hasCode } from '../core/errors.js'
import { serverInfoFile } from './roster-access.js'
import { CliError, openFailure, parse, parseInteger } from './args.js'
import { siteKeyOf } from './open-device.js'
import type { Command } from './main.js'

const help = `Usage: rostersync server [options]

Runs the site's server peer: LevelDB in --data, devices sync over WebSocket.

Options:
  --data <dir>       data directory (default ./data)
  --host <addr>      interface to listen on (default 127.0.0.1)
  --port <n>         port (default 4400; 0 picks a free one)
  --site-key <key>   secret devices must present to join (or ROSTERSYNC_SITE_KEY);
                     default: generated once and kept in <data>/site-key (mode 0600)
  --site-key-file <file>
                     read the site key from a file (kept off the process list)
  --open             an open site: any device joins, with any key or none
                     (never the default; announced at start-up)
  --approve-devices  a device never seen before waits (PEER_PENDING) until
                     approved: rostersync devices approve <id>
  --admin-host <name>
                     a host name the admin page answers on besides IP
                     addresses and localhost (repeatable; a name pointed at
                     this server by someone else's page is refused)
  --json             print where it listens as one JSON line
  -h, --help         this help`

/** Fewest characters of a site key given to the server before it warns. */
const SITE_KEY_CHARS_MIN = 16

export const serverCommand: Command = {
  summary: 'run the server peer (LevelDB + WebSocket sync)',
  help,
  async run(argv) {
    const { values, positionals } = parse(argv, {
      data: { type: 'string', default: './data' },
      host: { type: 'string', default: '127.0.0.1' },
      port: { type: 'string', default: '4400' },
      'site-key': { type: 'string' },
      'site-key-file': { type: 'string' },
      open: { type: 'boolean', default: false },
      'approve-devices': { type: 'boolean', default: false },
      'admin-host': { type: 'string', multiple: true },
      json: { type: 'boolean', default: false },
    })
    if (positionals.length > 0) throw new CliError(`unexpected argument ${positionals[0]}`)
    if (values['site-key'] === '')
      throw new CliError('--site-key is empty; leave it out to use the one in the data directory')
    const siteKey = await siteKeyOf(values['site-key'], values['site-key-file'])
    if (values.open && siteKey !== undefined && siteKey !== '')
      throw new CliError(
        '--open and a site key (--site-key, --site-key-file or ROSTERSYNC_SITE_KEY) exclude each other',
      )
    // The site key keys export files (HKDF) and the LAN's private network:
    // a short one is guessable. Said, not refused: a site's key cannot be
    // changed without enrolling every device again (a review: refusing it
    // would stop an existing site at its upgrade).
    if (siteKey !== undefined && siteKey !== '' && siteKey.length < SITE_KEY_CHARS_MIN)
      console.error(
        `WARNING: the site key is ${siteKey.length} characters; use ${SITE_KEY_CHARS_MIN} or more random ones (leave --site-key out for a generated one)`,
      )
    const server = await openServer({
      dataDir: values.data,
      host: values.host,
      port: parseInteger('port', values.port, 0, 65535) ?? 4400,
      ...(siteKey === undefined || siteKey === '' ? {} : { siteKey }),
      ...(values.open ? { open: true } : {}),
      ...(values['approve-devices'] ? { approveDevices: true } : {}),
      ...(values['admin-host'] === undefined ? {} : { adminHosts: values['admin-host'] }),
    })
    // Counted off the replica: users.list() copies every view (core/detach.ts).
    const users = server.replica.list().length
    // Local tools (rostersync users/events/devices) find the running server here.
    const info = serverInfoFile(values.data)
    // With the directory it serves: a copy of it (a backup taken while it
    // runs) holds this file too, and is not this server's (a probe: users
    // added to the copy were added to the live site).
    const about = JSON.stringify({
      url: server.url,
      http: server.http,
      pid: process.pid,
      data: realpathSync(values.data),
    })
    // Not written, the server closes: it ran on, listening, and the command
    // hung after printing its error (an operator probe's run).
    await writeFile(info, about).catch(async (error: unknown) => {
      await server.close()
      throw new CliError(`cannot write ${info}: ${(error as Error).message}`, 1)
    })
    if (values.open) {
      // Loud on purpose, on stderr even with --json: an open site admits anyone.
      console.error(
        'WARNING: this site is OPEN (--open): any device joins, with any key or none. Anyone who reaches this port can write the roster.',
      )
    }
    if (values.json) {
      console.log(
        JSON.stringify({
          url: server.url,
          http: server.http,
          data: values.data,
          users,
          open: values.open,
          approveDevices: values['approve-devices'],
          ...(server.siteKeyFile === undefined ? {} : { siteKeyFile: server.siteKeyFile }),
          keyFingerprint: server.keyFingerprint,
        }),
      )
    } else {
      console.log(
        `rostersync server listening on ${server.url} (data: ${values.data}, ${users} user(s))`,
      )
      console.log(
        `admin page: ${server.http}/ (sign in with the admin token in ${join(values.data, 'admin-token')})`,
      )
      // The hint is a command that works when copied, from any directory:
      // it names where the key is (an absolute path), never the key itself
      // (logs are read by many).
      const keyFile = server.siteKeyFile === undefined ? undefined : resolvePath(server.siteKeyFile)
      const keyOption = values.open
        ? ''
        : keyFile !== undefined
          ? ` --site-key-file ${keyFile}`
          : values['site-key-file'] !== undefined
            ? ` --site-key-file ${resolvePath(values['site-key-file'])}`
            : values['site-key'] === undefined
              ? ' --site-key "$ROSTERSYNC_SITE_KEY"'
              : ' --site-key <the key given to --site-key>'
      if (keyFile !== undefined) console.log(`site key: in ${keyFile} (cat ${keyFile})`)
      console.log(`server key fingerprint: ${server.keyFingerprint}`)
      console.log(
        `start a device:  npx rostersync device --id D1 --server ${server.url}${keyOption} --data ./dev1`,
      )
      if (values['approve-devices'])
        console.log(
          `new devices wait for approval:  npx rostersync devices approve <id> --data ${resolvePath(values.data)}`,
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

/** createServer, explaining a data directory another server holds. */
async function openServer(options: ServerOptions): Promise<ServerPeer> {
  const { createServer } = await import('../server-peer/create-server.js')
  try {
    return await createServer(options)
  } catch (error) {
    if (hasCode(error, 'STORAGE_FAILED') && options.dataDir !== undefined)
      throw new CliError(
        openFailure(
          options.dataDir,
          error as Error,
          'is a server already running on it? Stop it first',
        ),
        1,
      )
    throw error
  }
}
