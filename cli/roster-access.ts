/**
 * How a CLI command reaches the roster: through a running server's HTTP API
 * (found by `--server`, or by the `server.json` a running server writes in
 * its data directory), or, when no server runs, by opening the data
 * directory itself.
 */
import { existsSync, readFileSync, realpathSync } from 'node:fs'
import { join } from 'node:path'
import type { EventQuery, RosterEvent } from '../core/events.js'
import { netLimits } from '../core/limits.js'
import type { UserView } from '../core/resolve.js'
import type { DeviceRecord } from '../server-peer/device-registry.js'
import { fromWire, toWire } from '../server-peer/wire-json.js'
import { CliError } from './args.js'
import { openServerData } from './open-peer.js'
import type { ExportRequest, PreparedExport } from '../server-peer/export-users.js'
import type { CompactionResult } from '../server-peer/generations.js'

/** The roster operations the CLI needs, wherever the roster is. */
export interface RosterAccess {
  list(): Promise<UserView[]>
  get(id: string): Promise<UserView | undefined>
  put(record: Record<string, unknown>): Promise<void>
  patch(id: string, fields: Record<string, unknown>): Promise<void>
  delete(id: string): Promise<boolean>
  events(q: EventQuery): Promise<RosterEvent[]>
  devices(nameContains?: string): Promise<DeviceRecord[]>
  revoke(id: string): Promise<boolean>
  /** Approves a pending device; false if unknown. */
  approve(id: string): Promise<boolean>
  /** Forgets a device (`server.devices.forget`); false if unknown. */
  forget(id: string): Promise<boolean>
  /** Unbinds a device's key (`server.devices.resetKey`); false if unknown. */
  resetKey(id: string): Promise<boolean>
  /** Prepares an export (`server.exportUsers`, `POST /api/exports`). */
  exportUsers(request: ExportRequest): Promise<PreparedExport>
  /** Starts a new generation (`server.compactHistory`, `POST /api/generations`). */
  compactHistory(): Promise<CompactionResult>
  close(): Promise<void>
}

/** Where a running server writes its address, for local tools. */
export const serverInfoFile = (dataDir: string): string => join(dataDir, 'server.json')

/** Opens the roster for a command. */
export async function openRoster(opts: {
  data: string
  server?: string | undefined
  token?: string | undefined
  /** The site key, for a directory opened directly (`openServerData`). */
  siteKey?: string | undefined
}): Promise<RosterAccess> {
  const found = opts.server === undefined ? runningServer(opts.data) : undefined
  const running = opts.server ?? found
  if (running !== undefined) {
    // An empty variable is an unset one (a shell's `VAR=` clears it).
    const fromEnv = process.env.ROSTERSYNC_ADMIN_TOKEN
    const token =
      opts.token ??
      (fromEnv === undefined || fromEnv === '' ? undefined : fromEnv) ??
      readToken(opts.data)
    if (token === undefined)
      throw new CliError('an admin token is required: --token or ROSTERSYNC_ADMIN_TOKEN')
    checkToken(token)
    // Found through server.json: a server killed without cleaning up leaves
    // it, and its pid may be another process's by now.
    const stale =
      found === undefined
        ? ''
        : ` (named by ${serverInfoFile(opts.data)}: if no server runs on ${opts.data}, that file is stale; remove it)`
    return httpAccess(running.replace(/^ws/, 'http').replace(/\/$/, ''), token, stale)
  }
  const server = await openServerData(opts.data, opts.siteKey)
  return {
    list: async () => server.users.list(),
    get: async (id) => server.users.get(id),
    // Bytes are written `{ "base64": ... }` on the command line, as the
    // HTTP API (and `users get --json`) writes them.
    put: (record) => server.users.put(fromWire(record)),
    patch: (id, fields) => server.users.patch(id, fromWire(fields)),
    delete: (id) => server.users.delete(id),
    events: async (q) => server.events.query(q),
    devices: async (nameContains) =>
      server.devices.list(nameContains === undefined ? {} : { nameContains }),
    revoke: (id) => server.devices.revoke(id),
    approve: (id) => server.devices.approve(id),
    forget: (id) => server.devices.forget(id),
    resetKey: (id) => server.devices.resetKey(id),
    exportUsers: (request) => server.exportUsers(request),
    compactHistory: () => server.compactHistory(),
    close: () => server.close(),
  }
}

/**
 * The address of the server running on `dataDir`, from the `server.json` it
 * wrote there; undefined when none runs. The file names the directory the
 * server serves: a copy of that directory (a backup taken while it ran)
 * holds the file too, and commands on the copy work on the copy, not on
 * the live site.
 */
function runningServer(dataDir: string): string | undefined {
  const file = serverInfoFile(dataDir)
  if (!existsSync(file)) return undefined
  try {
    const info = JSON.parse(readFileSync(file, 'utf8')) as {
      http?: string
      pid?: number
      data?: string
    }
    if (typeof info.data === 'string' && info.data !== realpathSync(dataDir)) return undefined
    if (typeof info.pid === 'number') process.kill(info.pid, 0)
    return info.http
  } catch {
    // The server that wrote it is gone (or the file is damaged): use the data directly.
    return undefined
  }
}

/**
 * Refuses a token an HTTP header cannot carry (a line break or another
 * control character, often from a file read with its line ending; a
 * character past Latin-1; spaces around it) before any request: fetch
 * would refuse it with a message that quotes the whole header, the token
 * with it, and blame the network. Spaces inside are carried.
 */
function checkToken(token: string): void {
  // eslint-disable-next-line no-control-regex -- control characters are what it refuses
  if (/[\x00-\x08\x0a-\x1f\x7f]|[^\x00-\xff]/.test(token) || token.trim() !== token)
    throw new CliError(
      'the admin token holds a line break, another control character, a character a header cannot carry, or spaces around it: check --token, ROSTERSYNC_ADMIN_TOKEN or the admin-token file (not shown)',
    )
}

/**
 * The JSON body of a response, or a one-line error when what answered is not
 * a rostersync server (an HTML page, a proxy's error, another program).
 */
async function jsonBody(res: Response, base: string): Promise<unknown> {
  const text = await res.text()
  try {
    return JSON.parse(text) as unknown
  } catch {
    throw new CliError(
      `${base} did not answer as a rostersync server (HTTP ${res.status}, ${res.headers.get('content-type') ?? 'no content type'}): is --server right?`,
      1,
    )
  }
}

/** The typed error of a failed response, as `CODE: message`. */
async function failure(res: Response, base: string): Promise<CliError> {
  const payload = (await jsonBody(res, base)) as { error?: { code?: unknown; message?: unknown } }
  const { code, message } = payload.error ?? {}
  if (typeof code !== 'string')
    return new CliError(
      `${base} did not answer as a rostersync server (HTTP ${res.status}, no error code): is --server right?`,
      1,
    )
  return new CliError(`${code}: ${typeof message === 'string' ? message : ''}`, 1)
}

function readToken(dataDir: string): string | undefined {
  try {
    return readFileSync(join(dataDir, 'admin-token'), 'utf8').trim()
  } catch {
    return undefined
  }
}

function httpAccess(base: string, token: string, stale = ''): RosterAccess {
  const call = async (method: string, path: string, body?: unknown): Promise<unknown> => {
    let res: Response
    try {
      res = await fetch(`${base}${path}`, {
        method,
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        ...(body === undefined ? {} : { body: toWire(body) }),
      })
    } catch (error) {
      throw new CliError(`cannot reach the server at ${base}${stale}: ${fetchFailure(error)}`, 1)
    }
    if (!res.ok) {
      const refused = await failure(res, base)
      if (res.status === 404 && refused.message.startsWith('USER_NOT_FOUND:') && method === 'GET')
        return undefined
      throw refused
    }
    return fromWire(await jsonBody(res, base))
  }
  const enc = encodeURIComponent
  // One path segment: "." and ".." would be dot segments the URL drops (a
  // black-box probe: `users get .` printed the first page of users).
  const segment = (id: string): string => {
    if (id === '' || id === '.' || id === '..')
      throw new CliError(
        `INVALID_RECORD: invalid id ${JSON.stringify(id)}: not empty, "." or ".."`,
        1,
      )
    return enc(id)
  }
  return {
    list: async () => {
      // The API pages the roster (`next` is the cursor of the following page).
      const users: UserView[] = []
      let after: string | null = null
      do {
        const query: string = after === null ? '' : `&after=${enc(after)}`
        const page = (await call(
          'GET',
          `/api/users?limit=${netLimits.usersPerPageMax}${query}`,
        )) as {
          users: UserView[]
          next: string | null
        }
        users.push(...page.users)
        after = page.next
      } while (after !== null)
      return users
    },
    get: async (id) => (await call('GET', `/api/users/${segment(id)}`)) as UserView | undefined,
    put: async (record) => {
      await call(
        'PUT',
        `/api/users/${segment(typeof record.id === 'string' ? record.id : '')}`,
        record,
      )
    },
    patch: async (id, fields) => {
      await call('PATCH', `/api/users/${segment(id)}`, fields)
    },
    delete: async (id) => {
      try {
        await call('DELETE', `/api/users/${segment(id)}`)
        return true
      } catch (error) {
        if (error instanceof CliError && error.message.startsWith('USER_NOT_FOUND')) return false
        throw error
      }
    },
    events: async (q) => {
      const params = new URLSearchParams()
      for (const type of typeof q.type === 'string' ? [q.type] : (q.type ?? []))
        params.append('type', type)
      if (q.deviceId !== undefined) params.set('device', q.deviceId)
      if (q.userId !== undefined) params.set('user', q.userId)
      if (q.since !== undefined) params.set('since', String(q.since))
      if (q.until !== undefined) params.set('until', String(q.until))
      if (q.limit !== undefined) params.set('limit', String(q.limit))
      return (await call('GET', `/api/events?${params.toString()}`)) as RosterEvent[]
    },
    devices: async (nameContains) =>
      (await call(
        'GET',
        `/api/devices${nameContains === undefined ? '' : `?nameContains=${enc(nameContains)}`}`,
      )) as DeviceRecord[],
    revoke: async (id) => {
      await call('POST', `/api/devices/${segment(id)}/revoke`)
      return true
    },
    approve: async (id) => {
      await call('POST', `/api/devices/${segment(id)}/approve`)
      return true
    },
    forget: async (id) => {
      await call('DELETE', `/api/devices/${segment(id)}`)
      return true
    },
    resetKey: async (id) => {
      await call('POST', `/api/devices/${segment(id)}/reset-key`)
      return true
    },
    exportUsers: (request) => httpExport(base, token, request, stale),
    compactHistory: async () => (await call('POST', '/api/generations')) as CompactionResult,
    close: async () => undefined,
  }
}

/** `POST /api/exports`: the file's bytes, its expiry, size and key source from the headers. */
async function httpExport(
  base: string,
  token: string,
  request: ExportRequest,
  stale = '',
): Promise<PreparedExport> {
  let res: Response
  try {
    res = await fetch(`${base}/api/exports`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify(request),
    })
  } catch (error) {
    throw new CliError(`cannot reach the server at ${base}${stale}: ${fetchFailure(error)}`, 1)
  }
  if (!res.ok) throw await failure(res, base)
  // A rostersync server says when the file expires; a page that answered
  // 200 instead must not be written out as an export file.
  const expiresAt = Number(res.headers.get('x-rostersync-expires-at') ?? NaN)
  if (!Number.isFinite(expiresAt) || expiresAt <= 0)
    throw new CliError(
      `${base} did not answer as a rostersync server (HTTP ${res.status}, no export expiry): is --server right?`,
      1,
    )
  const passphrase = res.headers.get('x-rostersync-passphrase')
  const source = res.headers.get('x-rostersync-key-source')
  return {
    file: new Uint8Array(await res.arrayBuffer()),
    expiresAt,
    users: Number(res.headers.get('x-rostersync-users')),
    keySource:
      source === 'passphrase' || source === 'site-key' || source === 'none'
        ? source
        : passphrase === null && request.passphrase === undefined
          ? 'site-key'
          : 'passphrase',
    ...(passphrase === null ? {} : { passphrase }),
  }
}

/**
 * Why a fetch failed, in its cause's words: fetch says only "fetch failed"
 * and keeps the reason (ECONNREFUSED, a name that does not resolve) in its
 * cause (a probe).
 */
function fetchFailure(error: unknown): string {
  const cause = (error as { cause?: { code?: unknown; message?: unknown } }).cause
  const detail =
    typeof cause?.code === 'string'
      ? cause.code
      : typeof cause?.message === 'string'
        ? cause.message
        : undefined
  const message = error instanceof Error ? error.message : String(error)
  return detail === undefined ? message : `${message} (${detail})`
}
