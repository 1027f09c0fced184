/** `rostersync events`: query a peer's event log. */
import { EVENT_TYPES, type EventType } from '../core/events.js'
import { CliError, parse, parseDuration, parseInteger, toJson } from './args.js'
import type { Command } from './main.js'
import { openRoster } from './roster-access.js'

const help = `Usage: rostersync events [options]

Options:
  --data <dir>      the server's data directory (default ./data; uses its HTTP API when it runs)
  --server <url>    a running server's URL, e.g. http://127.0.0.1:4400
  --token <token>   the server's admin token
  --since <dur>     only events newer than this (e.g. 30m, 1d)
  --type <type>     only this type (${EVENT_TYPES.join(', ')})
  --device <id>     only events about this device
  --user <id>       only events about this user
  --limit <n>       at most n events (newest)
  --json            print one JSON object per line
  -h, --help        this help`

export const eventsCommand: Command = {
  summary: 'query the event log (by period, device, user, type)',
  help,
  async run(argv) {
    const { values } = parse(argv, {
      data: { type: 'string', default: './data' },
      server: { type: 'string' },
      token: { type: 'string' },
      since: { type: 'string' },
      type: { type: 'string' },
      device: { type: 'string' },
      user: { type: 'string' },
      limit: { type: 'string' },
      json: { type: 'boolean', default: false },
    })
    if (values.type !== undefined && !EVENT_TYPES.includes(values.type as EventType)) {
      throw new CliError(`unknown event type ${values.type}; one of ${EVENT_TYPES.join(', ')}`)
    }
    const limit = parseInteger('limit', values.limit, 1, 1_000_000)
    const roster = await openRoster({
      data: values.data,
      server: values.server,
      token: values.token,
    })
    try {
      const events = await roster.events({
        ...(values.type === undefined ? {} : { type: values.type as EventType }),
        ...(values.device === undefined ? {} : { deviceId: values.device }),
        ...(values.user === undefined ? {} : { userId: values.user }),
        ...(values.since === undefined ? {} : { since: Date.now() - parseDuration(values.since) }),
        ...(limit === undefined ? {} : { limit }),
      })
      for (const e of events) {
        if (values.json) console.log(toJson(e))
        else {
          const who = [
            e.deviceId && `device=${e.deviceId}`,
            e.userId && `user=${e.userId}`,
            e.origin && `origin=${e.origin}`,
          ]
          console.log(
            `${new Date(e.at).toISOString()}  ${e.type.padEnd(26)} ${who.filter(Boolean).join(' ')}`,
          )
        }
      }
      if (!values.json) console.log(`${events.length} event(s)`)
    } finally {
      await roster.close()
    }
  },
}
