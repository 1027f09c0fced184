/**
 * The server's JSON HTTP API on the sync port: the roster (list, get, put,
 * patch, delete), devices (list, revoke) and the event log, behind an admin
 * token. Byte fields (templates, photos) travel as `{ "base64": "..." }`.
 */
import { timingSafeEqual } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { RostersyncError, type ErrorCode } from '../core/errors.js'
import { EVENT_TYPES, type EventQuery, type EventType } from '../core/events.js'
import { netLimits } from '../core/limits.js'
import type { UsersApi } from '../peers/user-ops.js'
import type { DeviceRecord } from './device-registry.js'

/** What the API serves. */
export interface HttpApiTarget {
  readonly users: UsersApi
  readonly events: { query(q?: EventQuery): unknown[] }
  readonly devices: {
    list(filter?: { nameContains?: string }): DeviceRecord[]
    revoke(id: string): Promise<boolean>
  }
}

const statusOf: Partial<Record<ErrorCode, number>> = {
  INVALID_RECORD: 400,
  INVALID_OPTIONS: 400,
  MALFORMED_MESSAGE: 400,
  USER_NOT_FOUND: 404,
  MESSAGE_TOO_LARGE: 413,
  AUTH_FAILED: 401,
  STORAGE_FAILED: 503,
  PEER_CLOSED: 503,
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message)
  }
}

/** JSON with byte arrays as `{ base64 }`. */
export function toWire(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) =>
    v instanceof Uint8Array ? { base64: Buffer.from(v).toString('base64') } : v,
  )
}

/** Turns `{ base64 }` objects back into byte arrays. */
export function fromWire(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(fromWire)
  if (typeof value === 'object' && value !== null) {
    const entries = Object.entries(value)
    if (entries.length === 1 && entries[0]?.[0] === 'base64' && typeof entries[0][1] === 'string') {
      return new Uint8Array(Buffer.from(entries[0][1], 'base64'))
    }
    return Object.fromEntries(entries.map(([k, v]) => [k, fromWire(v)]))
  }
  return value
}

/** Builds the request handler. */
export function httpApi(target: HttpApiTarget, adminToken: string) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    void serve(target, adminToken, req, res).catch((error: unknown) => {
      const [status, code, message] =
        error instanceof HttpError
          ? [error.status, error.code, error.message]
          : error instanceof RostersyncError
            ? [statusOf[error.code] ?? 500, error.code, error.message]
            : [500, 'INTERNAL', 'internal error']
      reply(res, status, { error: { code, message } })
    })
  }
}

function reply(res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent) return
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8' })
  res.end(toWire(body))
}

function authorised(req: IncomingMessage, token: string): boolean {
  const given = Buffer.from((req.headers.authorization ?? '').replace(/^Bearer /, ''))
  const expected = Buffer.from(token)
  return given.length === expected.length && timingSafeEqual(given, expected)
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.byteLength
    if (size > netLimits.httpBodyBytesMax) {
      throw new HttpError(413, 'MESSAGE_TOO_LARGE', `body over ${netLimits.httpBodyBytesMax} bytes`)
    }
    chunks.push(chunk)
  }
  try {
    return fromWire(JSON.parse(Buffer.concat(chunks).toString('utf8')))
  } catch {
    throw new HttpError(400, 'MALFORMED_MESSAGE', 'body is not JSON')
  }
}

async function serve(
  target: HttpApiTarget,
  token: string,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://x')
  const parts = url.pathname.split('/').filter(Boolean).map(decodeURIComponent)
  if (parts[0] === 'api' && parts[1] === 'health') return reply(res, 200, { ok: true })
  if (parts[0] !== 'api') throw new HttpError(404, 'NOT_FOUND', 'no such endpoint (try /api/users)')
  if (!authorised(req, token))
    throw new HttpError(401, 'AUTH_FAILED', 'admin token required (Authorization: Bearer …)')
  const [, resource, id, action] = parts
  const method = req.method ?? 'GET'
  if (resource === 'users') return serveUsers(target, method, id, req, res)
  if (resource === 'devices' && method === 'GET' && id === undefined) {
    const nameContains = url.searchParams.get('nameContains') ?? undefined
    return reply(res, 200, target.devices.list(nameContains === undefined ? {} : { nameContains }))
  }
  if (resource === 'devices' && method === 'POST' && id !== undefined && action === 'revoke') {
    if (!(await target.devices.revoke(id)))
      throw new HttpError(404, 'PEER_UNKNOWN', `no device ${id}`)
    return reply(res, 200, { ok: true })
  }
  if (resource === 'events' && method === 'GET')
    return reply(res, 200, target.events.query(eventQuery(url)))
  throw new HttpError(404, 'NOT_FOUND', `no endpoint ${method} ${url.pathname}`)
}

async function serveUsers(
  target: HttpApiTarget,
  method: string,
  id: string | undefined,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  if (id === undefined) {
    if (method !== 'GET')
      throw new HttpError(405, 'METHOD_NOT_ALLOWED', 'use GET /api/users or PUT /api/users/:id')
    return reply(res, 200, target.users.list())
  }
  switch (method) {
    case 'GET': {
      const user = target.users.get(id)
      if (user === undefined) throw new HttpError(404, 'USER_NOT_FOUND', `no user ${id}`)
      return reply(res, 200, user)
    }
    case 'PUT': {
      const body = await readJson(req)
      const record = typeof body === 'object' && body !== null ? { ...body, id } : body
      await target.users.put(record)
      return reply(res, 200, target.users.get(id))
    }
    case 'PATCH':
      await target.users.patch(id, await readJson(req))
      return reply(res, 200, target.users.get(id))
    case 'DELETE':
      if (!(await target.users.delete(id)))
        throw new HttpError(404, 'USER_NOT_FOUND', `no user ${id}`)
      return reply(res, 200, { ok: true })
    default:
      throw new HttpError(405, 'METHOD_NOT_ALLOWED', `${method} is not supported on /api/users/:id`)
  }
}

function eventQuery(url: URL): EventQuery {
  const p = url.searchParams
  const type = p.get('type')
  if (type !== null && !EVENT_TYPES.includes(type as EventType)) {
    throw new HttpError(400, 'INVALID_OPTIONS', `unknown event type ${type}`)
  }
  const num = (name: string): number | undefined => {
    const v = p.get(name)
    if (v === null) return undefined
    const n = Number(v)
    if (!Number.isFinite(n))
      throw new HttpError(400, 'INVALID_OPTIONS', `${name} must be a number (ms since epoch)`)
    return n
  }
  const q: Record<string, unknown> = {}
  if (type !== null) q.type = type
  for (const [param, key] of [
    ['device', 'deviceId'],
    ['user', 'userId'],
  ] as const) {
    const v = p.get(param)
    if (v !== null) q[key] = v
  }
  for (const name of ['since', 'until', 'limit']) {
    const v = num(name)
    if (v !== undefined) q[name] = v
  }
  return q
}
