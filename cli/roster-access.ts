/**
 * How a CLI command reaches the roster: through a running server's HTTP API
 * (found by `--server`, or by the `server.json` a running server writes in
 * its data directory), or, when no server runs, by opening the data
 * directory itself.
 */
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { EventQuery, RosterEvent } from '../core/events.js'
import { netLimits } from '../core/limits.js'
import type { UserView } from '../core/resolve.js'
import type { DeviceRecord } from '../server-peer/device-registry.js'
import { fromWire, toWire } from '../server-peer/http-api.js'
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
}): Promise<RosterAccess> {
  const running = opts.server ?? runningServer(opts.data)
  if (running !== undefined) {
    // An empty variable is an unset one (a shell's `VAR=` clears it).
    const fromEnv = process.env.ROSTERSYNC_ADMIN_TOKEN
    const token =
      opts.token ??
      (fromEnv === undefined || fromEnv === '' ? undefined : fromEnv) ??
      readToken(opts.data)
    if (token === undefined)
      throw new CliError('an admin token is required: --token or ROSTERSYNC_ADMIN_TOKEN')
    return httpAccess(running.replace(/^ws/, 'http').replace(/\/$/, ''), token)
  }
  const server = await openServerData(opts.data)
  return {
    list: async () => server.users.list(),
    get: async (id) => server.users.get(id),
    put: (record) => server.users.put(record),
    patch: (id, fields) => server.users.patch(id, fields),
    delete: (id) => server.users.delete(id),
    events: async (q) => server.events.query(q),
    devices: async (nameContains) =>
      server.devices.list(nameContains === undefined ? {} : { nameContains }),
    revoke: (id) => server.devices.revoke(id),
    approve: (id) => server.devices.approve(id),
    forget: (id) => server.devices.forget(id),
    exportUsers: (request) => server.exportUsers(request),
    compactHistory: () => server.compactHistory(),
    close: () => server.close(),
  }
}

function runningServer(dataDir: string): string | undefined {
  const file = serverInfoFile(dataDir)
  if (!existsSync(file)) return undefined
  try {
    const info = JSON.parse(readFileSync(file, 'utf8')) as { http?: string; pid?: number }
    if (typeof info.pid === 'number') process.kill(info.pid, 0)
    return info.http
  } catch {
    // The server that wrote it is gone (or the file is damaged): use the data directly.
    return undefined
  }
}

function readToken(dataDir: string): string | undefined {
  try {
    return readFileSync(join(dataDir, 'admin-token'), 'utf8').trim()
  } catch {
    return undefined
  }
}

function httpAccess(base: string, token: string): RosterAccess {
  const call = async (method: string, path: string, body?: unknown): Promise<unknown> => {
    let res: Response
    try {
      res = await fetch(`${base}${path}`, {
        method,
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        ...(body === undefined ? {} : { body: toWire(body) }),
      })
    } catch (error) {
      throw new CliError(`cannot reach the server at ${base}: ${(error as Error).message}`, 1)
    }
    const payload = fromWire(await res.json()) as { error?: { code: string; message: string } }
    if (res.status === 404 && payload.error?.code === 'USER_NOT_FOUND' && method === 'GET')
      return undefined
    if (!res.ok)
      throw new CliError(`${payload.error?.code ?? res.status}: ${payload.error?.message ?? ''}`, 1)
    return payload
  }
  const enc = encodeURIComponent
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
    get: async (id) => (await call('GET', `/api/users/${enc(id)}`)) as UserView | undefined,
    put: async (record) => {
      await call('PUT', `/api/users/${enc(typeof record.id === 'string' ? record.id : '')}`, record)
    },
    patch: async (id, fields) => {
      await call('PATCH', `/api/users/${enc(id)}`, fields)
    },
    delete: async (id) => {
      try {
        await call('DELETE', `/api/users/${enc(id)}`)
        return true
      } catch (error) {
        if (error instanceof CliError && error.message.startsWith('USER_NOT_FOUND')) return false
        throw error
      }
    },
    events: async (q) => {
      const params = new URLSearchParams()
      if (typeof q.type === 'string') params.set('type', q.type)
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
      await call('POST', `/api/devices/${enc(id)}/revoke`)
      return true
    },
    approve: async (id) => {
      await call('POST', `/api/devices/${enc(id)}/approve`)
      return true
    },
    forget: async (id) => {
      await call('DELETE', `/api/devices/${enc(id)}`)
      return true
    },
    exportUsers: (request) => httpExport(base, token, request),
    compactHistory: async () => (await call('POST', '/api/generations')) as CompactionResult,
    close: async () => undefined,
  }
}

/** `POST /api/exports`: the file's bytes, its expiry, size and key source from the headers. */
async function httpExport(
  base: string,
  token: string,
  request: ExportRequest,
): Promise<PreparedExport> {
  let res: Response
  try {
    res = await fetch(`${base}/api/exports`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify(request),
    })
  } catch (error) {
    throw new CliError(`cannot reach the server at ${base}: ${(error as Error).message}`, 1)
  }
  if (!res.ok) {
    const payload = (await res.json().catch(() => ({}))) as {
      error?: { code: string; message: string }
    }
    throw new CliError(`${payload.error?.code ?? res.status}: ${payload.error?.message ?? ''}`, 1)
  }
  const passphrase = res.headers.get('x-rostersync-passphrase')
  const source = res.headers.get('x-rostersync-key-source')
  return {
    file: new Uint8Array(await res.arrayBuffer()),
    expiresAt: Number(res.headers.get('x-rostersync-expires-at')),
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
