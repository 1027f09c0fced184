/**
 * The server's JSON HTTP API on the sync port: the roster (search in
 * pages, get, put, patch, delete, the sources of a user's fields), devices
 * (list, revoke, approve), the event log, field policies and live updates,
 * behind the admin token (`Authorization: Bearer`, never in the query) or
 * the admin page's session cookie (a change made with the cookie also
 * needs the page's CSRF header). It also serves the admin page itself
 * (`/` and `/admin/...`). Byte fields (templates, photos) travel as
 * `{ "base64": "..." }`. Every failure is a typed JSON error (`{ error: {
 * code, message } }`) whose message carries at most a bounded excerpt of
 * the request.
 */
import { createHash } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import {
  clip,
  excerpt,
  InvalidOptionsError,
  InvalidRecordError,
  MalformedMessageError,
  MalformedRequestError,
  MessageTooLargeError,
  MethodNotAllowedError,
  NotFoundError,
  PeerUnknownError,
  RostersyncError,
  UserExistsError,
  UserNotFoundError,
  type ErrorCode,
} from '../core/errors.js'
import { EVENT_TYPES, type EventQuery, type EventType } from '../core/events.js'
import { limits, netLimits } from '../core/limits.js'
import type { UsersApi } from '../peers/user-ops.js'
import { isAssetPath, serveAsset } from './admin-assets.js'
import { fromWire, toWire } from './wire-json.js'
import { servePolicies, serveSession, serveSources, type AdminConsole } from './admin-routes.js'
import { checkCsrf, checkHost, isBackground, sameSecret, sessionIdOf } from './admin-sessions.js'
import type { DeviceRecord } from './device-registry.js'
import { checkQueryParams, searchFromQuery } from './user-search.js'
import { serveExport, type ExportTarget } from './export-route.js'
import type { CompactionResult } from './generations.js'
import type { Generation } from '../core/generation-statement.js'

/** What the API serves. */
export interface HttpApiTarget {
  readonly users: UsersApi
  readonly events: { query(q?: EventQuery): unknown[] }
  readonly devices: {
    list(filter?: { nameContains?: string }): DeviceRecord[]
    revoke(id: string): Promise<boolean>
    approve(id: string): Promise<boolean>
    resetKey(id: string): Promise<boolean>
    forget(id: string): Promise<boolean>
  }
  /** Every user id, sorted (the pages of `GET /api/users` walk it). */
  readonly replica: { allUserIds(): readonly string[]; readonly clock: { now(): number } }
  /** `POST /api/exports` (server-peer/export-route.ts). */
  readonly exportUsers: ExportTarget['exportUsers']
  /** `POST /api/generations`: a new generation of the document (issue 13). */
  compactHistory(): Promise<CompactionResult>
  /** `GET /api/generations`: the generation the document is on. */
  readonly generation: Generation
}

const statusOf: Partial<Record<ErrorCode, number>> = {
  INVALID_RECORD: 400,
  INVALID_OPTIONS: 400,
  MALFORMED_MESSAGE: 400,
  MALFORMED_REQUEST: 400,
  USER_NOT_FOUND: 404,
  GROUP_NOT_FOUND: 404,
  USER_EXISTS: 412,
  PEER_UNKNOWN: 404,
  NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  PEER_REVOKED: 409,
  PEER_PENDING: 409,
  MESSAGE_TOO_LARGE: 413,
  EXPORT_TOO_LARGE: 400,
  AUTH_FAILED: 401,
  RATE_LIMITED: 429,
  STORAGE_FAILED: 503,
  PEER_CLOSED: 503,
  CSRF_REFUSED: 403,
  TOO_MANY_STREAMS: 503,
  TOO_MANY_USERS: 400,
  EXPORT_EXPIRED: 410,
  EXPORT_PASSPHRASE_INVALID: 400,
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

/** Builds the request handler. Never throws; every failure is a typed JSON error. */
export function httpApi(target: HttpApiTarget, adminToken: string, admin: AdminConsole) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    void serve(target, adminToken, admin, req, res).catch((error: unknown) => {
      const [status, code, message] =
        error instanceof HttpError
          ? [error.status, error.code, error.message]
          : error instanceof RostersyncError
            ? [statusOf[error.code] ?? 500, error.code, error.message]
            : [500, 'INTERNAL', 'internal error']
      if (error instanceof MethodNotAllowedError && !res.headersSent)
        res.setHeader('allow', error.allow.join(', '))
      if (status === 401 && !res.headersSent) res.setHeader('www-authenticate', 'Bearer')
      // A body the server stopped reading (or never read: a refusal before
      // it, 401, 404, 405) must not be taken for the next request, nor
      // drained for ever: Node reads on to keep the connection (a probe
      // sent 3.2 GiB after its 401).
      if ((status === 413 || !req.complete) && !res.headersSent)
        res.setHeader('connection', 'close')
      // At most `httpErrorMessageCharsMax` characters: a schema's message
      // may name what the request held (an unknown key of 2 MB came back
      // whole, a black-box probe).
      reply(res, status, {
        error: { code, message: clip(message, netLimits.httpErrorMessageCharsMax) },
      })
    })
  }
}

function reply(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Readonly<Record<string, string>> = {},
): void {
  // Encoded before the head goes out: a body that cannot be encoded is an
  // error the caller answers, not a 200 with no body.
  replyWire(res, status, toWire(body), headers)
}

/** {@link reply} with the body already encoded (toWire). */
function replyWire(
  res: ServerResponse,
  status: number,
  text: string,
  headers: Readonly<Record<string, string>> = {},
): void {
  if (res.headersSent) return
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
    ...headers,
  })
  res.end(text)
}

/**
 * Who the request is: with an `Authorization` header only `Bearer <admin
 * token>` counts (not a bare token; a token in the query string would end
 * up in logs and browser history), compared in constant time; without one,
 * the admin page's session cookie. Undefined for neither.
 */
function authenticate(
  req: IncomingMessage,
  token: string,
  admin: AdminConsole,
): 'bearer' | 'cookie' | undefined {
  const header = req.headers.authorization
  if (header !== undefined) {
    const address = req.socket.remoteAddress ?? ''
    admin.sessions.guesses.check(address)
    const match = /^Bearer (.+)$/i.exec(header)
    if (match !== null && sameSecret(match[1] ?? '', token)) return 'bearer'
    admin.sessions.guesses.wrong(address)
    return undefined
  }
  return admin.sessions.use(sessionIdOf(req, admin.sessions), !isBackground(req))
    ? 'cookie'
    : undefined
}

/**
 * Reads a JSON body of at most `maxBytes` (`MESSAGE_TOO_LARGE`), nested at
 * most `netLimits.httpJsonDepthMax` deep (`MALFORMED_MESSAGE`, checked
 * before it is parsed).
 */
async function readJson(
  req: IncomingMessage,
  maxBytes = netLimits.httpBodyBytesMax,
): Promise<unknown> {
  const declared = Number(req.headers['content-length'] ?? 0)
  if (declared > maxBytes) throw new MessageTooLargeError('request body', declared, maxBytes)
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.byteLength
    if (size > maxBytes) throw new MessageTooLargeError('request body', size, maxBytes)
    chunks.push(chunk)
  }
  const bytes = Buffer.concat(chunks)
  if (jsonDepth(bytes) > netLimits.httpJsonDepthMax)
    throw new MalformedMessageError(
      `body nests deeper than ${netLimits.httpJsonDepthMax} arrays or objects`,
    )
  let text: string
  try {
    // Not replaced with U+FFFD: a name "Jos\xE9" sent as Latin-1 was stored
    // as "Jos\uFFFD" (a probe); a body that is not UTF-8 is refused.
    text = UTF8.decode(bytes)
  } catch {
    throw new MalformedMessageError('body is not UTF-8 (JSON is sent as UTF-8)')
  }
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch {
    throw new MalformedMessageError('body is not JSON')
  }
  return fromWire(parsed)
}

/** A decoder that refuses bytes that are not UTF-8. */
const UTF8 = new TextDecoder('utf-8', { fatal: true })

/**
 * How deep `[` and `{` nest in JSON text, strings skipped (UTF-8: no byte of
 * a multi-byte character is one of these ASCII bytes). Stops counting past
 * the bound's neighbourhood: only "too deep" matters.
 */
export function jsonDepth(bytes: Uint8Array): number {
  let depth = 0
  let deepest = 0
  let inString = false
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]
    if (inString) {
      if (b === 0x5c)
        i++ // a backslash escapes the next byte
      else if (b === 0x22) inString = false
    } else if (b === 0x22) inString = true
    else if (b === 0x5b || b === 0x7b) {
      if (++depth > deepest) deepest = depth
      if (deepest > netLimits.httpJsonDepthMax) return deepest
    } else if (b === 0x5d || b === 0x7d) depth--
  }
  return deepest
}

/** The methods each route takes (405 with `Allow` for the others). */
const ROUTES: ReadonlyArray<{ readonly pattern: RegExp; readonly methods: readonly string[] }> = [
  { pattern: /^api\/health$/, methods: ['GET'] },
  { pattern: /^api\/users$/, methods: ['GET'] },
  { pattern: /^api\/users\/[^/]+$/, methods: ['GET', 'PUT', 'PATCH', 'DELETE'] },
  { pattern: /^api\/users\/[^/]+\/sources$/, methods: ['GET'] },
  { pattern: /^api\/devices$/, methods: ['GET'] },
  { pattern: /^api\/devices\/[^/]+\/(revoke|approve|reset-key)$/, methods: ['POST'] },
  { pattern: /^api\/devices\/[^/]+$/, methods: ['DELETE'] },
  { pattern: /^api\/events$/, methods: ['GET'] },
  { pattern: /^api\/policies$/, methods: ['GET', 'PUT'] },
  { pattern: /^api\/policies\/preview$/, methods: ['GET'] },
  { pattern: /^api\/stream$/, methods: ['GET'] },
  { pattern: /^api\/exports$/, methods: ['POST'] },
  { pattern: /^api\/generations$/, methods: ['GET', 'POST'] },
]

/** The routes that take query parameters (each checks its own: checkQueryParams). */
const TAKES_QUERY = /^api\/(users|devices|events|policies\/preview)$/

type Route = (typeof ROUTES)[number]

/** Whether HEAD answers as GET on `route`: it has GET, and GET ends (not the event stream). */
const headable = (route: Route): boolean =>
  route.methods.includes('GET') && route.pattern.source !== '^api\\/stream$'

/** The methods `route` takes, HEAD included where it answers as GET (the `Allow` header). */
const allowedOf = (route: Route): readonly string[] =>
  headable(route) ? [...route.methods, 'HEAD'] : route.methods

/** Sign-in and sign-out: served before authentication (see admin-routes.ts). */
const SESSION_METHODS = ['GET', 'POST', 'DELETE']

/** A slash, a backslash or a control character (NUL included): never part of an id in a path. */
// eslint-disable-next-line no-control-regex
const UNSAFE_IN_ID = /[/\\\u0000-\u001f\u007f]/

/**
 * The request's path segments, decoded. Total: a target that does not
 * parse, a segment that does not decode, or one that is empty, `.`, `..`,
 * or holds a slash or a control character (NUL included) is
 * `MALFORMED_REQUEST`; no id reaches the roster with any of them.
 */
function pathOf(rawUrl: string): { parts: string[]; url: URL } {
  if (!rawUrl.startsWith('/') || rawUrl.startsWith('//'))
    throw new MalformedRequestError(`request target ${excerpt(rawUrl, 32)} is not a path`)
  // URL parsing would resolve dot segments (`/api/users/../..` is `/`, the
  // admin page): a target holding one is refused as it came, whatever it
  // would resolve to. Browsers resolve them before sending.
  const rawPath = rawUrl.split(/[?#]/, 1)[0] ?? ''
  // The URL parser reads a backslash as a slash: `x\..\u1` is a dot segment too.
  if (rawPath.includes('\\'))
    throw new MalformedRequestError(`request target ${excerpt(rawUrl, 32)} holds a backslash`)
  if (rawPath.split('/').some((segment) => /^(\.|%2e){1,2}$/i.test(segment)))
    throw new MalformedRequestError(`request target ${excerpt(rawUrl, 32)} has a dot segment`)
  let url: URL
  try {
    url = new URL(rawUrl, 'http://x')
  } catch {
    throw new MalformedRequestError(`request target ${excerpt(rawUrl, 32)} does not parse`)
  }
  // A query whose percent-encoding is not UTF-8 (`?q=%FF`): URLSearchParams
  // would search for U+FFFD; refused instead, as a path segment is.
  // A `%` not followed by two hex digits is taken as itself, as
  // URLSearchParams takes it (`?q=100%`).
  for (const piece of url.search.slice(1).split('&')) {
    try {
      decodeURIComponent(piece.replace(/\+/g, ' ').replace(/%(?![0-9a-f]{2})/gi, '%25'))
    } catch {
      throw new MalformedRequestError(`query ${excerpt(piece, 32)} does not decode as UTF-8`)
    }
  }
  const parts = url.pathname.split('/').slice(1)
  if (parts.at(-1) === '') parts.pop()
  return {
    url,
    parts: parts.map((part) => {
      let decoded: string
      try {
        decoded = decodeURIComponent(part)
      } catch {
        throw new MalformedRequestError(`path segment ${excerpt(part, 32)} does not decode`)
      }
      if (decoded === '' || decoded === '.' || decoded === '..' || UNSAFE_IN_ID.test(decoded))
        throw new MalformedRequestError(`path segment ${excerpt(decoded, 32)} is not a valid id`)
      return decoded
    }),
  }
}

async function serve(
  target: HttpApiTarget,
  token: string,
  admin: AdminConsole,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const { url, parts } = pathOf(req.url ?? '/')
  const route = ROUTES.find((r) => r.pattern.test(parts.join('/')))
  // HEAD is GET without the body (RFC 9110; Node sends no body for it),
  // where GET answers and ends (not the event stream, which stays open).
  const asked = req.method ?? 'GET'
  const headAsGet = asked === 'HEAD' && route !== undefined && headable(route)
  const method = headAsGet ? 'GET' : asked
  // Whatever its query (a monitor's cache-buster: a review), as it is read
  // by machines that only look at the status.
  if (parts[0] === 'api' && parts[1] === 'health' && method === 'GET')
    return reply(res, 200, { ok: true })
  // Everything else only under this server's own names (DNS rebinding: a
  // page that points its name here could guess tokens and lock the
  // administrator's address out with wrong ones).
  checkHost(req, admin.parts.hosts)
  if (parts[0] !== 'api') {
    if (!isAssetPath(url.pathname)) throw new NotFoundError('no such endpoint (try /api/users)')
    if (method !== 'GET' && method !== 'HEAD')
      throw new MethodNotAllowedError(method, ['GET', 'HEAD'])
    return serveAsset(url.pathname, req, res)
  }
  if (parts[1] === 'session' && parts.length === 2) {
    // Read before the caller is known: a sign-in body is a token, small.
    const body = () => readJson(req, netLimits.httpSignInBodyBytesMax)
    if (!SESSION_METHODS.includes(method)) throw new MethodNotAllowedError(method, SESSION_METHODS)
    // Before any token is read or compared (an operator probe: signed in
    // with parameters, and a token in the URL met a bare 401).
    if (url.searchParams.has('token'))
      throw new InvalidOptionsError(
        'a token never goes in a URL (logs and browser history keep it): send { "token": … } in the body',
      )
    checkQueryParams(url.searchParams, [], `${method} /api/session`)
    return serveSession(admin, method, req, res, body, reply)
  }
  const how = authenticate(req, token, admin)
  if (how === undefined)
    throw new HttpError(
      401,
      'AUTH_FAILED',
      req.headers.authorization === undefined
        ? 'admin token required (Authorization: Bearer …) or a signed-in admin page session'
        : 'admin token rejected (Authorization: Bearer <the token in the data directory>)',
    )
  if (route === undefined) throw new NotFoundError(`no endpoint ${excerpt(url.pathname, 64)}`)
  if (!route.methods.includes(method)) throw new MethodNotAllowedError(method, allowedOf(route))
  if (how === 'cookie' && method !== 'GET' && method !== 'HEAD') checkCsrf(req)
  // The endpoints without query parameters refuse any (those with them
  // check theirs): a parameter ignored is a request answered narrower or
  // other than asked.
  if (!TAKES_QUERY.test(parts.join('/')))
    checkQueryParams(url.searchParams, [], `${method} ${url.pathname}`)
  const [, resource, id, action] = parts
  if (resource === 'users' && action === 'sources' && id !== undefined)
    return serveSources(admin, id, res, reply)
  if (resource === 'users') return serveUsers(target, admin, method, id, url, req, res)
  if (resource === 'exports')
    return serveExport(target, await readJson(req), res, target.replica.clock.now())
  if (resource === 'generations')
    return reply(res, 200, method === 'POST' ? await target.compactHistory() : target.generation)
  if (resource === 'devices' && id === undefined) {
    checkQueryParams(url.searchParams, ['nameContains'], 'GET /api/devices')
    const nameContains = url.searchParams.get('nameContains') ?? undefined
    if (nameContains !== undefined && nameContains.length > limits.textCharsMax)
      throw new HttpError(
        400,
        'INVALID_OPTIONS',
        `nameContains must be at most ${limits.textCharsMax} characters`,
      )
    return reply(res, 200, target.devices.list(nameContains === undefined ? {} : { nameContains }))
  }
  if (resource === 'devices' && id !== undefined) {
    if (action === 'approve') checkApprovedKey(req, target, id)
    const done =
      action === undefined
        ? await target.devices.forget(id)
        : action === 'approve'
          ? await target.devices.approve(id)
          : action === 'reset-key'
            ? await target.devices.resetKey(id)
            : await target.devices.revoke(id)
    if (!done) throw new PeerUnknownError(id)
    return reply(res, 200, { ok: true })
  }
  if (resource === 'policies')
    return servePolicies(
      admin,
      method,
      id === 'preview',
      url,
      () => readJson(req),
      res,
      reply,
      (tag) => checkPoliciesCondition(req, tag),
    )
  if (resource === 'stream') {
    const session = sessionIdOf(req, admin.sessions)
    // A stream opened with the page's cookie lives only as long as its
    // session: sign-out or expiry ends it (Bearer: as long as the socket).
    return admin.streams.open(
      req,
      res,
      how === 'cookie' ? () => admin.sessions.expiresAt(session) !== undefined : undefined,
    )
  }
  return reply(res, 200, target.events.query(eventQuery(url)))
}

/**
 * An approval sent with `X-Rostersync-Key-Fingerprint` (the admin page
 * sends the one it showed) is refused 412 `PRECONDITION_FAILED` when the
 * device's key is another by now: reset and bound anew between the
 * administrator's comparison and the click.
 */
function checkApprovedKey(req: IncomingMessage, target: HttpApiTarget, id: string): void {
  const shown = req.headers['x-rostersync-key-fingerprint']
  if (typeof shown !== 'string') return
  const device = target.devices.list().find((d) => d.id === id)
  // An unknown device is the approval's 404 (PEER_UNKNOWN), not this.
  if (device === undefined) return
  const bound = device.keyFingerprint
  if (bound !== shown)
    throw new HttpError(
      412,
      'PRECONDITION_FAILED',
      bound === undefined
        ? `device ${excerpt(id, 64)} has no key bound now (reset since it was shown): wait for it to join, then compare again`
        : `the key of device ${excerpt(id, 64)} is ${bound} now, not the one shown: compare it with the terminal's again`,
    )
}

/** API writes of a user in flight, per server and user id (see writeUser). */
const userWrites = new WeakMap<HttpApiTarget, Map<string, Promise<void>>>()

/**
 * What a conditional write asks of the user first (RFC 9110 13.1; `If-Match`
 * is evaluated before `If-None-Match`):
 * - `match`: `If-Match: *` (replace only: 412 `USER_NOT_FOUND`), or entity
 *   tags one of which the user's must be (the tag a GET gave: 412
 *   `PRECONDITION_FAILED` once someone changed the user since);
 * - `noneMatch`: `If-None-Match: *` (create only: 412 `USER_EXISTS`), or
 *   entity tags none of which the user's may be (412 `PRECONDITION_FAILED`).
 */
interface Condition {
  readonly match?: '*' | readonly string[]
  readonly noneMatch?: '*' | readonly string[]
}

/** The strong entity tag of a user's view, from the JSON the API sends for it (toWire). */
function etagOf(wire: string): string {
  return `"${createHash('sha256').update(wire).digest('base64url').slice(0, 27)}"`
}

/**
 * The entity tags of an `If-Match` / `If-None-Match` header, or `*`: a
 * list of `*` alone (two `If-None-Match: *` headers, which Node joins with
 * a comma) is `*`; weak tags are kept with their `W/`. Anything else is 400
 * `INVALID_OPTIONS`, not a write made without the condition asked (a
 * create-only PUT whose header was not exactly `*` replaced the user whole).
 */
function tagList(header: string, name: string): '*' | string[] {
  // Empty members are allowed and ignored (RFC 9110 5.6.1.2: `"x", ` is one tag).
  const members = header
    .split(',')
    .map((member) => member.trim())
    .filter((member) => member !== '')
  if (members.length > 0 && members.every((member) => member === '*')) return '*'
  if (members.length > 0 && members.every((member) => /^(W\/)?"[\x21\x23-\x7e]*"$/.test(member)))
    return members
  throw new InvalidOptionsError(
    `${name} must be * or entity tags as a GET of the user gives them (ETag), got ${excerpt(header, 64)}`,
  )
}

/** The condition of a write's `If-Match` / `If-None-Match` headers, if any. */
function conditionOf(req: IncomingMessage): Condition | undefined {
  const ifMatch = req.headers['if-match']
  const ifNoneMatch = req.headers['if-none-match']
  if (ifMatch === undefined && ifNoneMatch === undefined) return undefined
  return {
    ...(ifMatch !== undefined && { match: tagList(ifMatch, 'If-Match') }),
    ...(ifNoneMatch !== undefined && { noneMatch: tagList(ifNoneMatch, 'If-None-Match') }),
  }
}

/** The opaque part of an entity tag, for the weak comparison (RFC 9110 8.8.3.2). */
const opaque = (tag: string): string => (tag.startsWith('W/') ? tag.slice(2) : tag)

/**
 * Whether `tag` (the current one) satisfies `condition` (undefined: the
 * resource is absent): why not, else undefined. A weak tag never matches
 * in `If-Match` (the strong comparison a write needs, RFC 9110 13.1.1);
 * `If-None-Match` compares weakly (13.1.2).
 */
function failedCondition(
  tag: string | undefined,
  condition: Condition,
): 'match' | 'absent' | 'noneMatch' | 'present' | undefined {
  const { match, noneMatch } = condition
  if (match !== undefined) {
    if (tag === undefined) return 'absent'
    if (match !== '*' && !match.includes(tag)) return 'match'
  }
  if (noneMatch !== undefined && tag !== undefined) {
    if (noneMatch === '*') return 'present'
    if (noneMatch.some((other) => opaque(other) === opaque(tag))) return 'noneMatch'
  }
  return undefined
}

/**
 * A change of the field policies made with `If-Match` (the tag a GET or a
 * preview of them gave): 412 `PRECONDITION_FAILED` once another change
 * made them something else since (an administrator confirming a preview
 * made of policies that changed meanwhile). Without it, the change is made.
 */
function checkPoliciesCondition(req: IncomingMessage, tag: string): void {
  const condition = conditionOf(req)
  if (condition === undefined || failedCondition(tag, condition) === undefined) return
  throw new HttpError(
    412,
    'PRECONDITION_FAILED',
    'the field policies changed since they were read (If-Match): read them, or preview the change, again',
  )
}

/** Throws the refusal of `condition` for user `id`, whose view is `view`; nothing when it holds. */
function checkCondition(id: string, view: unknown, condition: Condition): void {
  const tag = view === undefined ? undefined : etagOf(toWire(view))
  const failed = failedCondition(tag, condition)
  if (failed === undefined) return
  if (failed === 'present') throw new UserExistsError(id)
  if (failed === 'absent')
    throw new HttpError(
      412,
      'USER_NOT_FOUND',
      condition.match === '*'
        ? `no user ${excerpt(id, 64)} (If-Match: *)`
        : `no user ${excerpt(id, 64)}: it was deleted since it was read (If-Match)`,
    )
  throw new HttpError(
    412,
    'PRECONDITION_FAILED',
    failed === 'match'
      ? `user ${excerpt(id, 64)} changed since that ETag (it is ${tag} now): get it again and retry`
      : `user ${excerpt(id, 64)} still has that ETag (If-None-Match: ${tag})`,
  )
}

/**
 * Runs `write` on `condition`, if any. Every API write of one id runs in
 * this chain, one after another, each checking once the one before is
 * durable: two creates at once both found the id free, and the second
 * replaced the first; two edits from the same tag both matched it; a write
 * without a condition still being made (a PIN hashed) was not seen by an
 * If-Match write after it (a review).
 */
async function writeUser(
  target: HttpApiTarget,
  id: string,
  condition: Condition | undefined,
  write: () => Promise<unknown>,
): Promise<void> {
  let inFlight = userWrites.get(target)
  if (inFlight === undefined) userWrites.set(target, (inFlight = new Map<string, Promise<void>>()))
  const before = inFlight.get(id) ?? Promise.resolve()
  const mine = before.then(async () => {
    if (condition !== undefined) checkCondition(id, target.users.get(id), condition)
    await write()
  })
  const settled = mine.catch(() => undefined)
  inFlight.set(id, settled)
  void settled.then(() => {
    if (inFlight.get(id) === settled) inFlight.delete(id)
  })
  await mine
}

/** 200 with a user's view and its entity tag (404 once it is gone). */
function replyUser(res: ServerResponse, target: HttpApiTarget, id: string): void {
  const user = target.users.get(id)
  if (user === undefined) throw new UserNotFoundError(id)
  // Encoded once, for the body and its tag (a user may hold a photo).
  const wire = toWire(user)
  replyWire(res, 200, wire, { etag: etagOf(wire) })
}

async function serveUsers(
  target: HttpApiTarget,
  admin: AdminConsole,
  method: string,
  id: string | undefined,
  url: URL,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  if (id === undefined) return reply(res, 200, admin.users.page(searchFromQuery(url.searchParams)))
  switch (method) {
    case 'GET':
      return replyUser(res, target, id)
    case 'PUT': {
      const body = await readJson(req)
      // A record is a JSON object: an array spread into one would be an
      // empty record, a put that clears every field of the user.
      if (typeof body !== 'object' || body === null || Array.isArray(body))
        throw new InvalidRecordError('the body must be a JSON object (a user record)')
      if ('id' in body && body.id !== id) {
        // The URL names the record; a body naming another one is a mistake
        // (or a trick), not an instruction to write elsewhere.
        throw new InvalidRecordError(
          `the body's id ${excerpt(String(body.id), 32)} differs from the URL's ${excerpt(id, 32)}`,
        )
      }
      // Create only (`If-None-Match: *`, as HTTP has it): the admin page's
      // "Add user" replaced an existing user whole, clearing its fields.
      const condition = conditionOf(req)
      const put = (): Promise<unknown> => target.users.put({ ...body, id })
      await writeUser(target, id, condition, put)
      return replyUser(res, target, id)
    }
    case 'PATCH': {
      const condition = conditionOf(req)
      const fields = await readJson(req)
      const patch = (): Promise<unknown> => target.users.patch(id, fields)
      await writeUser(target, id, condition, patch)
      return replyUser(res, target, id)
    }
    default: {
      const condition = conditionOf(req)
      let deleted = false
      const remove = async (): Promise<void> => {
        deleted = await target.users.delete(id)
      }
      await writeUser(target, id, condition, remove)
      if (!deleted) throw new UserNotFoundError(id)
      return reply(res, 200, { ok: true })
    }
  }
}

/*
 * One page of users, ordered by id (user-search.ts): `?limit=` (default
 * `netLimits.usersPerPageDefault`, at most `usersPerPageMax`) users after
 * the id `?after=`, matching `?q=` (id, name, email, group, card value),
 * `?status=` and `?group=`; `next` is the cursor of the following page,
 * null on the last one; `?total=1` adds the count of every match. One
 * request never serialises a whole 100,000-user roster: `?all=1` (without
 * `limit` and `after`) sends every match in one response, `next` null and
 * `total` set, but at most `netLimits.usersAllMax` users, else 400
 * `TOO_MANY_USERS`. An unknown parameter is 400 `INVALID_OPTIONS` naming it.
 */

/** The query parameters of `GET /api/events`. */
const EVENT_PARAMS = ['type', 'device', 'user', 'since', 'until', 'limit', 'beforeSeq'] as const

/**
 * `GET /api/events` filters. A bad parameter, one it does not know, or one
 * given twice is 400 `INVALID_OPTIONS` naming the parameter; `type` may be
 * given more than once (events of any of those types).
 */
function eventQuery(url: URL): EventQuery {
  const p = url.searchParams
  checkQueryParams(p, EVENT_PARAMS, 'GET /api/events', ['type'])
  const types = p.getAll('type')
  for (const type of types)
    if (!EVENT_TYPES.includes(type as EventType))
      throw new HttpError(
        400,
        'INVALID_OPTIONS',
        `type must be an event type (e.g. user-update-succeeded), got ${excerpt(type, 32)}`,
      )
  const num = (name: string): number | undefined => {
    const v = p.get(name)
    if (v === null) return undefined
    // Decimal digits only: Number() reads '' and ' ' as 0 and '0x10' as 16.
    if (!/^-?\d{1,16}(\.\d+)?$/.test(v))
      throw new HttpError(
        400,
        'INVALID_OPTIONS',
        `${name} must be a number (ms since epoch), got ${excerpt(v, 32)}`,
      )
    return Number(v)
  }
  const q: Record<string, unknown> = {}
  // `?type=a&type=b`: events of either type.
  if (types.length === 1) q.type = types[0]
  else if (types.length > 1) q.type = types
  for (const [param, key] of [
    ['device', 'deviceId'],
    ['user', 'userId'],
  ] as const) {
    const v = p.get(param)
    if (v !== null) q[key] = v
  }
  for (const name of ['since', 'until']) {
    const v = num(name)
    if (v !== undefined) q[name] = v
  }
  // A period that ends before it starts matches nothing: it is a mistake
  // to say, not "No events" (a probe of the admin page; the CLI says so too).
  if (typeof q.since === 'number' && typeof q.until === 'number' && q.since > q.until)
    throw new InvalidOptionsError('the period ends (until) before it starts (since)')
  for (const name of ['limit', 'beforeSeq']) {
    const v = p.get(name)
    if (v === null) continue
    const n = Number(v)
    // `limit=0` or a negative one would slice the log from its other end;
    // decimal digits only (Number() reads '0x10' as 16, '1e3' as 1000).
    if (!/^\d{1,16}$/.test(v) || !Number.isSafeInteger(n) || n < 1)
      throw new HttpError(
        400,
        'INVALID_OPTIONS',
        `${name} must be a positive integer, got ${excerpt(v, 16)}`,
      )
    q[name] = n
  }
  return q
}
