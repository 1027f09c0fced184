/** `rostersync users list|get|add|edit|delete` on a server's data directory. */
import type { UserView } from '../core/resolve.js'
import { CliError, parse, parseJsonObject, toJson } from './args.js'
import type { Command } from './main.js'
import { openRoster } from './roster-access.js'
import { printTable } from './table.js'
import { roleOfDir } from '../peers/data-role.js'
import { WrongDataDirError } from '../core/errors.js'
import { existsSync } from 'node:fs'

const help = `Usage: rostersync users <list|get|add|edit|delete> [options]

  list                       every user, ordered by id
  get <id>                   one user
  add <json>                 enrol a user: '{"id":"u1","name":"Ann"}'; an existing id is
                             replaced whole (fields not given are cleared; edit changes some)
  edit <id> <json>           change fields: '{"email":"ann@example.com"}' (null clears)
  delete <id>                delete a user everywhere (the server's delete)

Options:
  --data <dir>     the server's data directory (default ./data); when a server runs on it,
                   its HTTP API is used, else the directory is opened directly (a stopped
                   device's users: rostersync device --data <dir> --list)
  --server <url>   a running server's HTTP (or WebSocket) URL, e.g. http://127.0.0.1:4400
  --token <token>  the server's admin token (default: <data>/admin-token or ROSTERSYNC_ADMIN_TOKEN)
  --json           print JSON (one object per line for list)
  -h, --help       this help`

const columns = ['id', 'name', 'email', 'department', 'status'] as const

/** Each action and how many arguments it takes. */
const ACTIONS: Partial<Record<string, number>> = { list: 0, get: 1, add: 1, edit: 2, delete: 1 }

/** `INVALID_RECORD` unless the record names a user id. */
function requireId(record: Record<string, unknown>): void {
  if (typeof record.id !== 'string' || record.id === '')
    throw new CliError('INVALID_RECORD: the record needs an id (a non-empty string)')
}

export const usersCommand: Command = {
  summary: 'list, show, add, edit and delete users',
  help,
  async run(argv) {
    const { values, positionals } = parse(argv, {
      data: { type: 'string', default: './data' },
      server: { type: 'string' },
      token: { type: 'string' },
      json: { type: 'boolean', default: false },
    })
    const [action, ...args] = positionals
    if (action === undefined)
      throw new CliError('which action? list, get, add, edit or delete (see --help)')
    const arity = ACTIONS[action]
    if (arity === undefined)
      throw new CliError(`unknown action ${action}; list, get, add, edit or delete`)
    if (args.length > arity) throw new CliError(`unexpected argument ${args[arity]}`)
    // The server's HTTP API names the user in the path: an id-less record
    // would reach another route there (and be refused as a wrong method).
    if (action === 'add') requireId(parseJsonObject('record', args[0]))
    // A stopped device's directory is read with `device --list`, never
    // opened as a server's (peers/data-role.ts): say where to look.
    const role =
      values.server === undefined && existsSync(values.data) ? roleOfDir(values.data) : undefined
    if (role?.role === 'device')
      throw new WrongDataDirError(
        `${values.data} holds device ${JSON.stringify(role.id)}'s data, not the server's: refused, nothing changed (its users: rostersync device --data ${values.data} --list)`,
      )
    const roster = await openRoster({
      data: values.data,
      server: values.server,
      token: values.token,
    })
    try {
      switch (action) {
        case 'list': {
          const users = await roster.list()
          if (values.json) for (const u of users) console.log(toJson(u))
          else printTable<UserView>(columns, users, 'user', toJson)
          return
        }
        case 'get': {
          const user = await roster.get(requireArg(args[0], 'user id'))
          if (user === undefined)
            throw new CliError(`USER_NOT_FOUND: no user ${JSON.stringify(args[0])}`, 1)
          // Bytes as base64 (as --json and the HTTP API show them); toJson
          // escapes whatever in a field would act on the terminal.
          console.log(toJson(user, values.json ? undefined : 2))
          return
        }
        case 'add':
          await roster.put(parseJsonObject('record', args[0]))
          break
        case 'edit':
          await roster.patch(requireArg(args[0], 'user id'), parseJsonObject('fields', args[1]))
          break
        case 'delete':
          if (!(await roster.delete(requireArg(args[0], 'user id'))))
            throw new CliError(`USER_NOT_FOUND: no user ${JSON.stringify(args[0])}`, 1)
          break
      }
      console.log(values.json ? toJson({ ok: true }) : 'done')
    } finally {
      await roster.close()
    }
  },
}

function requireArg(value: string | undefined, what: string): string {
  if (value === undefined || value === '') throw new CliError(`${what} is required`)
  return value
}
