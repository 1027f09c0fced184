/**
 * Sign-in for the admin page. The administrator gives the admin token once
 * (in a POST body, never in a URL); the server answers with a session
 * cookie that is `HttpOnly` (no script reads it) and `SameSite=Strict`
 * (no other site's page sends it). Sessions live in memory only: at most
 * `netLimits.adminSessionsMax`, each ending after
 * `adminSessionIdleMsMax` unused or `adminSessionMsMax` in all, and all of
 * them on restart. A request the cookie authenticates that changes
 * anything must also carry the page's CSRF header (a cross-site form
 * cannot set one) and, if it has an Origin, the server's own.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import { isIP } from 'node:net'
import { AuthFailedError, CsrfRefusedError, excerpt, RostersyncError } from '../core/errors.js'
import { netLimits } from '../core/limits.js'
import { addressKey } from './front-door.js'

/** Name of the session cookie. */
export const SESSION_COOKIE = 'rostersync_session'
/** The header every state-changing request of the page carries. */
export const CSRF_HEADER = 'x-rostersync-csrf'

interface Session {
  readonly createdAt: number
  lastUsedAt: number
}

/**
 * Wrong admin tokens per address (issue 11): past
 * `netLimits.adminTokenGuessesPerMinuteMax` in a minute, every sign-in and
 * Bearer request from the address is refused `RATE_LIMITED` (429) until
 * the minute is out, before its token is compared. An `admin-token` file
 * may hold a 16-character secret an operator chose; any page a browser on
 * the server's host opens could try it at thousands a second (its requests
 * pass the CSRF check under a rebound host name; now refused: checkHost).
 * Another address is not slowed: the administrator's own browser signs in
 * (an IPv6 address counts by its /64, which a host picks from: one on the
 * administrator's /64 is the same address here).
 */
export class TokenGuesses {
  private readonly byAddress = new Map<string, { start: number; wrong: number }>()

  constructor(private readonly now: () => number) {}

  /** Throws `RATE_LIMITED` while `address` is past its wrong guesses of the minute. */
  check(from: string): void {
    const address = addressKey(from)
    const entry = this.byAddress.get(address)
    if (entry === undefined) return
    const now = this.now()
    if (now - entry.start >= 60_000) {
      this.byAddress.delete(address)
      return
    }
    if (entry.wrong >= netLimits.adminTokenGuessesPerMinuteMax)
      throw new RostersyncError(
        'RATE_LIMITED',
        `more than ${netLimits.adminTokenGuessesPerMinuteMax} wrong admin tokens from this address in a minute: try again in ${Math.ceil((entry.start + 60_000 - now) / 1000)} s`,
      )
  }

  /** A wrong token came from `from`. */
  wrong(from: string): void {
    const address = addressKey(from)
    const now = this.now()
    const entry = this.byAddress.get(address)
    if (entry !== undefined && now - entry.start < 60_000) entry.wrong++
    else {
      this.byAddress.delete(address)
      // The oldest goes (insertion order): clearing all let 4,096 guesses
      // from as many addresses wipe every count (a review).
      if (this.byAddress.size >= ADDRESSES_KEPT_MAX) {
        const oldest = this.byAddress.keys().next().value
        if (oldest !== undefined) this.byAddress.delete(oldest)
      }
      this.byAddress.set(address, { start: now, wrong: 1 })
    }
  }
}

/** Addresses whose wrong guesses are counted at once (the oldest forgotten first). */
const ADDRESSES_KEPT_MAX = 4_096

/** The admin page's sessions (see the module comment). */
export class AdminSessions {
  /** By the SHA-256 of the session id: a lookup's timing says nothing about a valid id. */
  private readonly sessions = new Map<string, Session>()
  /** Wrong tokens per address, for sign-ins and Bearer requests alike. */
  readonly guesses: TokenGuesses

  constructor(
    private readonly adminToken: string,
    private readonly now: () => number,
  ) {
    this.guesses = new TokenGuesses(now)
  }

  /**
   * Signs in with the admin token (compared in constant time); returns the
   * new session's id and when it ends at the latest. `AUTH_FAILED` for
   * another token. Past the limit the least recently used session ends.
   */
  signIn(token: unknown, address = ''): { id: string; expiresAt: number } {
    this.guesses.check(address)
    if (typeof token !== 'string' || !sameSecret(token, this.adminToken)) {
      this.guesses.wrong(address)
      throw new AuthFailedError('admin token rejected')
    }
    this.sweep()
    while (this.sessions.size >= netLimits.adminSessionsMax) {
      let oldest: [string, Session] | undefined
      for (const entry of this.sessions)
        if (oldest === undefined || entry[1].lastUsedAt < oldest[1].lastUsedAt) oldest = entry
      if (oldest === undefined) break
      this.sessions.delete(oldest[0])
    }
    const id = randomBytes(32).toString('base64url')
    const now = this.now()
    this.sessions.set(digest(id), { createdAt: now, lastUsedAt: now })
    return { id, expiresAt: now + netLimits.adminSessionMsMax }
  }

  /**
   * True when the id names a live session, whose use it then notes (unless
   * `touch` is false: a request the page made by itself, a live reload, is
   * not the administrator's use, and kept an unattended console signed in).
   */
  use(id: string | undefined, touch = true): boolean {
    if (id === undefined) return false
    const key = digest(id)
    const session = this.sessions.get(key)
    if (session === undefined) return false
    const now = this.now()
    if (expired(session, now)) {
      this.sessions.delete(key)
      return false
    }
    if (touch) session.lastUsedAt = now
    return true
  }

  /** When a live session ends at the latest (idle or not), or undefined. */
  expiresAt(id: string | undefined): number | undefined {
    const session = id === undefined ? undefined : this.sessions.get(digest(id))
    if (session === undefined || expired(session, this.now())) return undefined
    return Math.min(
      session.createdAt + netLimits.adminSessionMsMax,
      session.lastUsedAt + netLimits.adminSessionIdleMsMax,
    )
  }

  /** Ends a session (sign-out); unknown ids are ignored. */
  signOut(id: string | undefined): void {
    if (id !== undefined) this.sessions.delete(digest(id))
  }

  /** Sessions held (live or not swept yet). */
  get size(): number {
    return this.sessions.size
  }

  private sweep(): void {
    const now = this.now()
    for (const [key, session] of this.sessions) if (expired(session, now)) this.sessions.delete(key)
  }
}

function expired(session: Session, now: number): boolean {
  return (
    now - session.lastUsedAt >= netLimits.adminSessionIdleMsMax ||
    now - session.createdAt >= netLimits.adminSessionMsMax
  )
}

const digest = (id: string): string => createHash('sha256').update(id).digest('hex')

/** Constant-time comparison of two secrets (of any lengths). */
export function sameSecret(given: string, expected: string): boolean {
  const a = Buffer.from(given)
  const b = Buffer.from(expected)
  return a.length === b.length && timingSafeEqual(a, b)
}

/**
 * The session cookie's value in a request, if any: of several cookies of
 * that name, the first naming a live session of `sessions` (else the
 * first). Cookies ignore ports: a page on another port of the same host
 * can set one more `rostersync_session` (a bogus one, sent first), and
 * taking the first alone signed the administrator out for good, every
 * sign-in again answered with 401.
 */
export function sessionIdOf(
  req: IncomingMessage,
  sessions: Pick<AdminSessions, 'expiresAt'>,
): string | undefined {
  const header = req.headers.cookie
  if (header === undefined) return undefined
  let first: string | undefined
  for (const part of header.split(';')) {
    const eq = part.indexOf('=')
    if (eq <= 0 || part.slice(0, eq).trim() !== SESSION_COOKIE) continue
    const id = part.slice(eq + 1).trim()
    if (sessions.expiresAt(id) !== undefined) return id
    first ??= id
  }
  return first
}

/** `Set-Cookie` of a new session. */
export function sessionCookie(id: string): string {
  const maxAge = Math.floor(netLimits.adminSessionMsMax / 1000)
  return `${SESSION_COOKIE}=${id}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${maxAge}`
}

/** `Set-Cookie` that removes the session cookie (sign-out). */
export function clearedSessionCookie(): string {
  return `${SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0`
}

/**
 * Refuses (`CSRF_REFUSED`) an HTTP request (the admin page, its sign-in,
 * the API; not `/api/health`) under a Host name the server was not told it
 * answers on. A page on another site can make its own name point at this
 * server (DNS rebinding): the browser then takes this server's answers as
 * that site's, its Origin checks pass, and its wrong Bearer tokens would
 * count against the browser's address (the administrator's). IP
 * addresses, `localhost` and `*.localhost` are always answered; other
 * names only when listed in `allowed` (createServer's `adminHosts`,
 * `rostersync server --admin-host`). A request without a Host header (no
 * browser sends one) is answered.
 */
export function checkHost(req: IncomingMessage, allowed: ReadonlySet<string>): void {
  const header = req.headers.host
  if (header === undefined) return
  const name = hostName(header)
  if (isIP(name) !== 0 || name === 'localhost' || name.endsWith('.localhost')) return
  if (allowed.has(name)) return
  // Named back only when it is a host name (a header may hold anything).
  const named = /^[a-z0-9.-]{1,253}$/.test(name) ? `: allow it with --admin-host ${name}` : ''
  throw new CsrfRefusedError(`host ${excerpt(name, 64)} is not the admin page's${named}`)
}

/** The name of a Host header, lower case, without its port, brackets or final dot. */
export function hostName(header: string): string {
  const bracketed = /^\[([^\]]*)\](?::\d*)?$/.exec(header)
  const name = bracketed?.[1] ?? header.replace(/:\d*$/, '')
  return name.toLowerCase().replace(/\.$/, '')
}

/**
 * Refuses (`CSRF_REFUSED`) a cookie-authenticated request that changes
 * something without the page's CSRF header, or whose Origin (or
 * `Sec-Fetch-Site`) says it comes from another site.
 */
export function checkCsrf(req: IncomingMessage): void {
  if (req.headers[CSRF_HEADER] !== '1')
    throw new CsrfRefusedError(
      `a change made with the session cookie needs the ${CSRF_HEADER} header`,
    )
  const origin = req.headers.origin
  const host = req.headers.host ?? ''
  if (origin !== undefined && origin !== `http://${host}` && origin !== `https://${host}`)
    throw new CsrfRefusedError(`origin ${excerpt(origin, 64)} is not this server's`)
  const site = req.headers['sec-fetch-site']
  if (site !== undefined && site !== 'same-origin' && site !== 'none')
    throw new CsrfRefusedError(`a ${excerpt(site, 16)} request cannot change anything`)
}

/**
 * Whether a request is one the admin page made by itself, not on the
 * administrator's action: marked `x-rostersync-background: 1` (a live
 * reload, a check of the session), or the live event stream (which
 * EventSource opens again by itself). It does not keep the session from
 * ending after `netLimits.adminSessionIdleMsMax` idle.
 */
export function isBackground(req: IncomingMessage): boolean {
  return req.headers['x-rostersync-background'] === '1' || req.url?.split('?')[0] === '/api/stream'
}
