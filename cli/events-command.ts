/** `rostersync events`: query a peer's event log. */
import { limits } from '../core/limits.js'
import { EVENT_TYPES, type EventType } from '../core/event-types.js'
import { CliError, parse, parseDuration, parseInteger, toJson } from './args.js'
import type { Command } from './main.js'
import { openRoster } from './roster-access.js'
import { terminalSafe } from './table.js'

const help = `Usage: rostersync events [options]

Options:
  --data <dir>      the server's data directory (default ./data; uses its HTTP API when it runs)
  --server <url>    a running server's URL, e.g. http://127.0.0.1:4400
  --token <token>   the server's admin token (default: <data>/admin-token or ROSTERSYNC_ADMIN_TOKEN)
  --since <when>    only events at or after this: a time ago (30m, 1d), an ISO
                    date or time (2026-12-01, 2026-12-01T08:00:00Z) or ms
                    since the epoch (11 digits or more; 0 is the epoch)
  --until <when>    only events before this (same forms)
  --type <type>     only this type; give it again for several
                    (${EVENT_TYPES.join(', ')})
  --device <id>     only events about this device
  --user <id>       only events about this user
  --limit <n>       at most n events, the newest (default and most: ${limits.eventsPerQueryMax.toLocaleString('en-US')})
  --json            print one JSON object per line
  -h, --help        this help`

export const eventsCommand: Command = {
  summary: 'query the event log (by period, device, user, type)',
  help,
  async run(argv) {
    const { values, positionals } = parse(argv, {
      data: { type: 'string', default: './data' },
      server: { type: 'string' },
      token: { type: 'string' },
      since: { type: 'string' },
      until: { type: 'string' },
      type: { type: 'string', multiple: true },
      device: { type: 'string' },
      user: { type: 'string' },
      limit: { type: 'string' },
      json: { type: 'boolean', default: false },
    })
    const types = values.type ?? []
    for (const type of types)
      if (!EVENT_TYPES.includes(type as EventType))
        throw new CliError(`unknown event type ${type}; one of ${EVENT_TYPES.join(', ')}`)
    if (positionals.length > 0) throw new CliError(`unexpected argument ${positionals[0]}`)
    const limit = parseInteger('limit', values.limit, 1, limits.eventsPerQueryMax)
    const since = values.since === undefined ? undefined : parseInstant('since', values.since)
    const until = values.until === undefined ? undefined : parseInstant('until', values.until)
    if (since !== undefined && until !== undefined && since > until)
      throw new CliError('--since is after --until: no event is in that period')
    const roster = await openRoster({
      data: values.data,
      server: values.server,
      token: values.token,
    })
    try {
      const events = await roster.events({
        ...(types.length === 0 ? {} : { type: types as EventType[] }),
        ...(values.device === undefined ? {} : { deviceId: values.device }),
        ...(values.user === undefined ? {} : { userId: values.user }),
        ...(since === undefined ? {} : { since }),
        ...(until === undefined ? {} : { until }),
        ...(limit === undefined ? {} : { limit }),
      })
      for (const e of events) {
        if (values.json) console.log(toJson(e))
        else {
          const who = [
            e.deviceId && `device=${e.deviceId}`,
            e.userId && `user=${e.userId}`,
            e.origin && `origin=${e.origin}`,
            e.kind && `kind=${e.kind}`,
            e.direction && `direction=${e.direction}`,
            e.fields && e.fields.length > 0 && `fields=${e.fields.join(',')}`,
            // What failed, and why: the line said only that something did.
            e.code && `code=${e.code}`,
            e.message && `— ${e.message}`,
          ]
          console.log(
            terminalSafe(
              `${new Date(e.at).toISOString()}  ${e.type.padEnd(26)} ${who.filter(Boolean).join(' ')}`,
            ),
          )
        }
      }
      if (!values.json) console.log(`${events.length} event(s)`)
    } finally {
      await roster.close()
    }
  },
}

/**
 * A time for --since / --until: a duration ago (`30m`, `1d`), an ISO date
 * or time, or ms since the epoch (11 digits or more, as the HTTP API takes
 * it; 0 is the epoch). A shorter bare number is refused: `2026` is no year
 * here.
 */
function parseInstant(name: string, text: string): number {
  const day = /^(\d{4})-(\d{2})-(\d{2})/.exec(text)
  if (day !== null) {
    const at = Date.parse(text)
    // A day the calendar has: Date.parse reads 2026-02-30 as 2 March.
    const [, y, m, d] = day.map(Number) as [number, number, number, number]
    const probe = new Date(Date.UTC(y, m - 1, d))
    const real = probe.getUTCMonth() === m - 1 && probe.getUTCDate() === d
    if (Number.isFinite(at) && real) return at
    throw new CliError(`--${name}: not a date or time: ${JSON.stringify(text)}`)
  }
  // 0 is the epoch, as the HTTP API reads `since=0` (here it was a
  // duration of none: --since 0 listed nothing, --until 0 everything).
  if (/^\d{11,16}$/.test(text) || /^0+$/.test(text)) return Number(text)
  try {
    return Date.now() - parseDuration(text)
  } catch {
    throw new CliError(
      `--${name}: not a time: ${JSON.stringify(text)} (a time ago such as 30m or 1d, an ISO date such as 2026-12-01, or ms since the epoch)`,
    )
  }
}
