/** `rostersync devices`: list a site's devices, revoke, approve or forget one. */
import { CliError, parse, toJson } from './args.js'
import type { Command } from './main.js'
import { openRoster } from './roster-access.js'

const help = `Usage: rostersync devices [list] [--name <part>] | devices revoke|approve|forget|reset-key <id>

  list             registered devices: id, name, last seen, state, and how each
                   sync direction last went (server→device, device→server)
  revoke <id>      refuse a device from now on (its connections close)
  approve <id>     let a pending device sync (servers run with --approve-devices);
                   a revoked device stays refused
  forget <id>      remove a device's record (a terminal taken out of service, an
                   id made up by a key holder): it joins again as a new device;
                   a revoked device is kept (its record keeps it refused)
  reset-key <id>   unbind a device's key (a terminal re-imaged, or whose data
                   directory was lost): it waits for approval, and the next key
                   that joins under the id is bound; compare the fingerprint the
                   terminal shows, then approve it

Options:
  --name <part>    only devices whose name contains this (case-insensitive)
  --data <dir>     the server's data directory (default ./data)
  --server <url>   a running server's URL, e.g. http://127.0.0.1:4400
  --token <token>  the server's admin token (default: <data>/admin-token or ROSTERSYNC_ADMIN_TOKEN)
  --json           print JSON (one object per line for list)
  -h, --help       this help`

const ACTIONS = ['list', 'revoke', 'approve', 'forget', 'reset-key']

export const devicesCommand: Command = {
  summary: 'list devices (filter by name), revoke, approve, forget or reset the key of a device',
  help,
  async run(argv) {
    const { values, positionals } = parse(argv, {
      name: { type: 'string' },
      data: { type: 'string', default: './data' },
      server: { type: 'string' },
      token: { type: 'string' },
      json: { type: 'boolean', default: false },
    })
    const [action = 'list', id, ...extra] = positionals
    if (!ACTIONS.includes(action))
      throw new CliError(`unknown action ${action}; list, revoke, approve, forget or reset-key`)
    const unexpected = action === 'list' ? id : extra[0]
    if (unexpected !== undefined) throw new CliError(`unexpected argument ${unexpected}`)
    // --name filters a list: with an action on one id it was silently ignored.
    if (action !== 'list' && values.name !== undefined)
      throw new CliError(`--name filters the list; ${action} takes only the device's id`)
    const roster = await openRoster({
      data: values.data,
      server: values.server,
      token: values.token,
    })
    try {
      if (action === 'revoke') {
        if (id === undefined) throw new CliError('which device? rostersync devices revoke <id>')
        if (!(await roster.revoke(id)))
          throw new CliError(`PEER_UNKNOWN: no device ${JSON.stringify(id)} in the registry`, 1)
        console.log(values.json ? toJson({ ok: true }) : `device ${id} revoked`)
        return
      }
      if (action === 'forget') {
        if (id === undefined) throw new CliError('which device? rostersync devices forget <id>')
        if (!(await roster.forget(id)))
          throw new CliError(`PEER_UNKNOWN: no device ${JSON.stringify(id)} in the registry`, 1)
        console.log(values.json ? toJson({ ok: true }) : `device ${id} forgotten`)
        return
      }
      if (action === 'reset-key') {
        if (id === undefined) throw new CliError('which device? rostersync devices reset-key <id>')
        if (!(await roster.resetKey(id)))
          throw new CliError(`PEER_UNKNOWN: no device ${JSON.stringify(id)} in the registry`, 1)
        console.log(
          values.json
            ? toJson({ ok: true })
            : `device ${id}: key unbound; it waits for approval (rostersync devices approve ${id}, after comparing its key fingerprint)`,
        )
        return
      }
      if (action === 'approve') {
        if (id === undefined) throw new CliError('which device? rostersync devices approve <id>')
        // Said when there was nothing to approve (it said "approved", and
        // logged nothing: an operator probe).
        const waited = (await roster.devices()).find((d) => d.id === id)?.pending === true
        if (!(await roster.approve(id)))
          throw new CliError(`PEER_UNKNOWN: no device ${JSON.stringify(id)} in the registry`, 1)
        console.log(
          values.json
            ? toJson({ ok: true, approved: waited })
            : waited
              ? `device ${id} approved`
              : `device ${id} was not waiting for approval: nothing to do`,
        )
        return
      }
      const devices = await roster.devices(values.name)
      if (!values.json && devices.length > 0) {
        console.log(
          `${'ID'.padEnd(16)} ${'NAME'.padEnd(20)} ${'LAST SEEN'.padEnd(24)} ${'STATE'.padEnd(12)} ${'SERVER→DEVICE'.padEnd(28)} DEVICE→SERVER`,
        )
      }
      for (const d of devices) {
        if (values.json) console.log(toJson(d))
        else {
          const seen = new Date(d.lastSeen).toISOString()
          const state =
            d.state ?? (d.revoked ? 'revoked' : d.connected ? 'connected' : 'disconnected')
          console.log(
            `${d.id.padEnd(16)} ${d.name.padEnd(20)} ${seen.padEnd(24)} ${state.padEnd(12)} ${direction(d.sync?.serverToDevice).padEnd(28)} ${direction(d.sync?.deviceToServer)}`,
          )
        }
      }
      if (!values.json) {
        console.log(`${devices.length} device(s)`)
        // The fingerprints to compare before approving (a probe: only --json had them).
        for (const d of devices)
          if (d.state === 'pending')
            console.log(`pending: ${d.id} key fingerprint ${d.keyFingerprint ?? '(none yet)'}`)
      }
    } finally {
      await roster.close()
    }
  },
}

/** "success 09:14:03Z" or "failed STORAGE_FAILED 09:14:03Z". */
function direction(
  d: { readonly state: string; readonly at?: number; readonly error?: string } | undefined,
): string {
  if (d === undefined) return 'not-started'
  const at = d.at === undefined ? '' : ` ${new Date(d.at).toISOString().slice(11, 19)}Z`
  return `${d.state}${d.error === undefined ? '' : ` ${d.error}`}${at}`
}
