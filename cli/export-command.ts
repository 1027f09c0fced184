/** `rostersync export`: chosen users to a file a stopped device can import. */
import { lstat, open, readFile, rename, rm, type FileHandle } from 'node:fs/promises'
import { CliError, parse } from './args.js'
import type { Command } from './main.js'
import type { PreparedExport } from '../server-peer/export-users.js'
import { siteKeyOf } from './open-device.js'
import { openRoster } from './roster-access.js'

const help = `Usage: rostersync export (--users <id,...> | --groups <id,...>) --out <file> [options]

Exports users (by id, and/or every member of the groups named) from the server
to a file signed by the server for its site. A device whose sync is stopped
imports it (rostersync import). The file expires 15 minutes after it was made;
at most 500 users and 50 groups per export (server defaults).

The file is encrypted (AES-256-GCM): it holds card numbers, templates and PIN
hashes. By default its key comes from the site key (HKDF), which every device
of the site holds: rostersync import opens it with the device's site key, no
passphrase needed. To protect it with a
passphrase instead, give one with --passphrase-file or
ROSTERSYNC_EXPORT_PASSPHRASE (at least 12 characters; its key drawn by scrypt,
N=2^17, about a second to export and to import), or --generate-passphrase
to have the server generate one (120 bits), printed once here; the import then
needs it: hand it over apart from the file. On an open site (no site key)
without a passphrase the file is NOT confidential: anyone who has it can read it.

Options:
  --users <ids>    user ids, comma-separated, or the option given once per id;
                   \\, is a comma within an id ('Smith\\, John'), \\\\ a backslash
  --groups <ids>   group ids (their members are exported), as --users
  --out <file>     where to write the file (refused if it exists, unless --force);
                   written with mode 0600: it holds personal data; - writes
                   it to standard output (not a terminal)
  --force          replace --out when it is a file (never a link, a device or
                   a folder)
  --passphrase-file <file>
                   encrypt under a passphrase read from a file (its first line);
                   else ROSTERSYNC_EXPORT_PASSPHRASE; else under the site key
  --generate-passphrase
                   encrypt under a passphrase the server generates, printed once
  --data <dir>     the server's data directory (default ./data); when a server runs
                   on it, its HTTP API is used, else the directory is opened directly
  --site-key <key>, --site-key-file <file>
                   with the directory opened directly, the site key the server
                   was started with (or ROSTERSYNC_SITE_KEY), when it was given
                   one rather than keeping it in <data>/site-key
  --server <url>   a running server's HTTP (or WebSocket) URL, e.g. http://127.0.0.1:4400
  --token <token>  the server's admin token (default: <data>/admin-token or ROSTERSYNC_ADMIN_TOKEN)
  --json           print { file, users, bytes, expiresAt, keySource, passphrase? }
                   as JSON (keySource: site-key, passphrase or none; passphrase:
                   only when generated)
  -h, --help       this help`

/**
 * The export passphrase: the first line of `file`, else
 * ROSTERSYNC_EXPORT_PASSPHRASE, else undefined. Never from the command
 * line itself, where other users of the machine see it (ps, shell history).
 */
export async function passphraseOf(file: string | undefined): Promise<string | undefined> {
  if (file !== undefined) {
    let text: string
    try {
      text = await readFile(file, 'utf8')
    } catch (error) {
      throw new CliError(`cannot read --passphrase-file ${file}: ${(error as Error).message}`, 1)
    }
    const line = text.split(/\r?\n/)[0] ?? ''
    if (line === '') throw new CliError(`--passphrase-file ${file} is empty`)
    return line
  }
  const env = process.env.ROSTERSYNC_EXPORT_PASSPHRASE
  return env === undefined || env === '' ? undefined : env
}

/**
 * The ids of a list option, given once or more, each value a
 * comma-separated list in which `\,` is a comma of an id and `\\` a
 * backslash; undefined when not given. `lists` gets each value that was
 * split at a comma (see exportCommand: one that is itself an id is
 * refused as ambiguous).
 */
export function idList(
  name: string,
  texts: readonly string[] | undefined,
  lists: string[] = [],
): string[] | undefined {
  if (texts === undefined) return undefined
  const ids: string[] = []
  for (const text of texts) {
    const parts = text.split(/(?<!\\)((?:\\\\)*),/)
    // split keeps the captured backslash pairs: join each to its part.
    const joined: string[] = []
    for (let i = 0; i < parts.length; i += 2) joined.push(`${parts[i] ?? ''}${parts[i + 1] ?? ''}`)
    if (joined.length > 1) lists.push(text)
    for (const part of joined) {
      const id = part.trim().replace(/\\([\\,])/g, '$1')
      if (id === '') throw new CliError(`--${name} has an empty id: ${JSON.stringify(text)}`)
      ids.push(id)
    }
  }
  return ids
}

export const exportCommand: Command = {
  summary: 'export chosen users (by id or group) to a signed file for a device',
  help,
  async run(argv) {
    const { values, positionals } = parse(argv, {
      users: { type: 'string', multiple: true },
      groups: { type: 'string', multiple: true },
      out: { type: 'string' },
      force: { type: 'boolean', default: false },
      data: { type: 'string', default: './data' },
      server: { type: 'string' },
      token: { type: 'string' },
      json: { type: 'boolean', default: false },
      'passphrase-file': { type: 'string' },
      'generate-passphrase': { type: 'boolean', default: false },
      'site-key': { type: 'string' },
      'site-key-file': { type: 'string' },
    })
    if (positionals.length > 0) throw new CliError(`unexpected argument ${positionals[0]}`)
    const passphrase = await passphraseOf(values['passphrase-file'])
    const generate = values['generate-passphrase']
    if (generate && passphrase !== undefined)
      throw new CliError(
        '--generate-passphrase excludes a given passphrase (--passphrase-file, ROSTERSYNC_EXPORT_PASSPHRASE)',
      )
    const listed: string[] = []
    const userIds = idList('users', values.users, listed)
    const groupIds = idList('groups', values.groups)
    if (userIds === undefined && groupIds === undefined)
      throw new CliError('name what to export: --users a,b and/or --groups g')
    if (values.out === undefined) throw new CliError('--out <file> is required')
    const out = values.out
    if (out === '-' && process.stdout.isTTY === true)
      throw new CliError(
        '--out - writes the file to standard output: redirect it to a file or a pipe',
      )
    if (out !== '-') await checkOut(out, values.force)
    // The file is made (empty, 0600) before the export: a path that cannot
    // be written is refused before the server logs an export (a probe found
    // `users-exported` logged for a file that never reached the disk).
    const file = out === '-' ? undefined : await reserveOut(out, values.force)
    let prepared
    try {
      const roster = await openRoster({
        data: values.data,
        server: values.server,
        token: values.token,
        siteKey: await siteKeyOf(values['site-key'], values['site-key-file']),
      })
      try {
        // 'Smith, John' as a list of two when a user has that id: the
        // wrong people exported, status 0 (a probe).
        for (const text of listed)
          if ((await roster.get(text.trim())) !== undefined)
            throw new CliError(
              `--users ${JSON.stringify(text)} is a user's id and a list of ids: write ${JSON.stringify(text.replaceAll(',', '\\,'))} for the one user, or give --users once per id`,
            )
        prepared = await roster.exportUsers({
          ...(userIds === undefined ? {} : { userIds }),
          ...(groupIds === undefined ? {} : { groupIds }),
          ...(passphrase === undefined ? {} : { passphrase }),
          ...(generate ? { generatePassphrase: true } : {}),
        })
      } finally {
        await roster.close()
      }
    } catch (error) {
      await file?.abandon()
      throw error
    }
    if (file === undefined) {
      await new Promise<void>((resolve, reject) =>
        process.stdout.write(prepared.file, (error) => (error ? reject(error) : resolve())),
      )
      // What it wrote is said on standard error: standard output is the file.
      console.error(summaryOf(prepared, 'standard output', values.json))
      return
    }
    try {
      await file.write(prepared.file)
    } catch (error) {
      await file.abandon()
      throw new CliError(`cannot write ${out}: ${(error as Error).message}`, 1)
    }
    console.log(summaryOf(prepared, values.out, values.json))
  },
}

/** The export's file, made before the export: written once, or abandoned (removed). */
interface ReservedOut {
  write(bytes: Uint8Array): Promise<void>
  abandon(): Promise<void>
}

/**
 * Makes `out` (or, with --force, a new file beside it that is renamed over
 * it once written: overwriting in place would keep the old file's mode),
 * empty, mode 0600, never through a link: `CliError` when it cannot.
 */
async function reserveOut(out: string, force: boolean): Promise<ReservedOut> {
  const path = force ? `${out}.${process.pid}.tmp` : out
  let handle: FileHandle
  try {
    handle = await open(path, 'wx', 0o600)
  } catch (error) {
    const code = (error as { code?: string }).code
    throw new CliError(
      code === 'EEXIST' && !force
        ? `${out} exists (use --force to overwrite)`
        : `cannot write ${out}: ${(error as Error).message}`,
      1,
    )
  }
  let handleOpen = true
  const abandon = async (): Promise<void> => {
    if (handleOpen) await handle.close().catch(() => undefined)
    handleOpen = false
    await rm(path, { force: true })
  }
  return {
    async write(bytes) {
      await handle.writeFile(bytes)
      await handle.sync()
      await handle.close()
      handleOpen = false
      if (force) await rename(path, out)
    },
    abandon,
  }
}

/**
 * Refuses, before anything is exported, an `--out` that exists and is not
 * a file --force may replace: a link (the file it names would not be the
 * one replaced), a device, a folder, a pipe.
 */
async function checkOut(out: string, force: boolean): Promise<void> {
  let stats
  try {
    stats = await lstat(out)
  } catch {
    return
  }
  if (!force) throw new CliError(`${out} exists (use --force to overwrite)`, 1)
  if (!stats.isFile())
    throw new CliError(
      `${out} exists and is not a file (${stats.isSymbolicLink() ? 'a link' : stats.isDirectory() ? 'a folder' : 'a device or pipe'}): refused, --force replaces only files`,
      1,
    )
}

/** What the command prints about an export it wrote. */
function summaryOf(prepared: PreparedExport, out: string, json: boolean): string {
  if (json)
    return JSON.stringify({
      file: out,
      users: prepared.users,
      bytes: prepared.file.byteLength,
      expiresAt: prepared.expiresAt,
      keySource: prepared.keySource,
      ...(prepared.passphrase === undefined ? {} : { passphrase: prepared.passphrase }),
    })
  const expiresAt = new Date(prepared.expiresAt).toISOString()
  const how =
    prepared.keySource === 'site-key'
      ? 'encrypted under the site key'
      : prepared.keySource === 'passphrase'
        ? 'encrypted under the passphrase'
        : 'NOT confidential: an open site has no site key; give a passphrase to protect it'
  return (
    `exported ${prepared.users} user(s) to ${out} (${prepared.file.byteLength} bytes, ${how}); import it before ${expiresAt}` +
    (prepared.passphrase === undefined
      ? ''
      : `\npassphrase: ${prepared.passphrase}\n(generated; shown only now: the import needs it)`)
  )
}
