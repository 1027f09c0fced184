// The admin page's calls to the server's JSON API. The session cookie
// (HttpOnly, SameSite=Strict) authenticates every call; every change also
// carries the CSRF header the server requires of cookie-authenticated
// changes. Errors come back as the API's typed { code, message }.

/** The header the server requires on changes made with the session cookie. */
const CSRF = { 'x-rostersync-csrf': '1' }

/**
 * The header of a request the page makes by itself (a live reload, a
 * session check): it does not count as the administrator's use, so an
 * unattended page signs out after 30 minutes idle however busy the site.
 */
export const BACKGROUND = { 'x-rostersync-background': '1' }

/** An API error: `code` is the server's stable error code. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message)
    this.status = status
    this.code = code
  }
}

let onSignedOut = () => {}

/** Called when a call finds the session gone (expired, or signed out elsewhere). */
export function whenSignedOut(listener) {
  onSignedOut = listener
}

/**
 * A user's view and its entity tag (`ETag`): an edit sent with the tag
 * (`If-Match`) is refused (412 `PRECONDITION_FAILED`) once someone else
 * changed the user, instead of overwriting their change unseen.
 */
export async function getUser(id) {
  const res = await fetch(`/api/users/${encodeURIComponent(id)}`, {
    headers: { accept: 'application/json' },
    credentials: 'same-origin',
  })
  if (!res.ok) throw await failure(res)
  return { user: await res.json(), etag: res.headers.get('etag') ?? undefined }
}

/**
 * The ApiError of a response that failed (its typed `{ error: { code,
 * message } }` body when it has one); a 401 tells the signed-out listener
 * unless `signsOut` is false.
 */
async function failure(res, signsOut = true) {
  const parsed = await res.json().catch(() => undefined)
  if (res.status === 401 && signsOut) onSignedOut()
  return new ApiError(
    res.status,
    parsed?.error?.code ?? 'HTTP_' + res.status,
    parsed?.error?.message ?? res.statusText,
  )
}

/** Calls the API: JSON in, JSON out; throws ApiError on failure. */
export async function api(method, path, body, extraHeaders = {}) {
  const headers = { accept: 'application/json', ...extraHeaders }
  if (method !== 'GET') Object.assign(headers, CSRF)
  if (body !== undefined) headers['content-type'] = 'application/json'
  const res = await fetch(path, {
    method,
    headers,
    credentials: 'same-origin',
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  })
  // A refused sign-in (POST /api/session) is not a session that ended.
  if (!res.ok) throw await failure(res, path !== '/api/session')
  const type = res.headers.get('content-type') ?? ''
  return type.includes('json') ? res.json() : res.blob()
}

/**
 * Downloads the export of the chosen users (`{ userIds }`, or `{ groupIds }`:
 * every member of the groups) as a file. `protection` is
 * `{ passphrase }` (the operator's), `{ generatePassphrase: true }`, or
 * nothing: the server then encrypts the file under the site key.
 */
export async function downloadExport(chosen, protection = {}) {
  const res = await fetch('/api/exports', {
    method: 'POST',
    headers: { ...CSRF, 'content-type': 'application/json' },
    credentials: 'same-origin',
    body: JSON.stringify({ ...chosen, ...protection }),
  })
  if (!res.ok) throw await failure(res)
  const blob = await res.blob()
  const disposition = res.headers.get('content-disposition') ?? ''
  const name = /filename="([^"]+)"/.exec(disposition)?.[1] ?? 'rostersync-export.rsx'
  const url = URL.createObjectURL(blob)
  const link = document.createElement('a')
  link.href = url
  link.download = name
  document.body.append(link)
  link.click()
  link.remove()
  setTimeout(() => URL.revokeObjectURL(url), 10_000)
  return {
    name,
    expiresAt: Number(res.headers.get('x-rostersync-expires-at')),
    keySource: res.headers.get('x-rostersync-key-source') ?? 'site-key',
    // Only when asked for: a passphrase the server generated, shown once,
    // never stored; whoever imports the file needs it.
    passphrase: res.headers.get('x-rostersync-passphrase') ?? undefined,
  }
}

/** Query string of the defined, non-empty parameters. */
export function query(params) {
  const search = new URLSearchParams()
  for (const [key, value] of Object.entries(params))
    if (value !== undefined && value !== null && value !== '') search.set(key, String(value))
  const text = search.toString()
  return text === '' ? '' : '?' + text
}

/** A time for people: local date and time, or a dash. */
export function when(ms) {
  return typeof ms === 'number' && ms > 0 ? new Date(ms).toLocaleString() : '—'
}

/** First wait before the page opens a refused live stream again, ms (doubled up to the max). */
const STREAM_RETRY_MS = 1_000
const STREAM_RETRY_MS_MAX = 30_000

/**
 * The live updates (server-sent events): `devices` (changed device
 * records) and `events` (new log events). One stream per page, opened
 * while signed in. The browser reconnects a dropped stream by itself, but
 * never one the server refused (401: the session ended; 503: the server's
 * streams were all taken, `adminStreamsMax`): the page asks whether the
 * session is still on, and if it is, opens the stream again after a wait
 * that doubles (1 s up to 30 s), reset once a stream is open.
 */
export function openStream(handlers) {
  let source
  let timer
  let stopped = false
  let wait = STREAM_RETRY_MS
  const open = () => {
    source = new EventSource('/api/stream')
    source.addEventListener('devices', (e) => handlers.devices?.(JSON.parse(e.data)))
    source.addEventListener('events', (e) => handlers.events?.(JSON.parse(e.data)))
    source.addEventListener('open', () => {
      wait = STREAM_RETRY_MS
      handlers.state?.('live')
    })
    source.addEventListener('error', () => {
      handlers.state?.('reconnecting')
      if (source.readyState !== EventSource.CLOSED || stopped) return
      void checkSession().then((signedIn) => {
        if (!signedIn || stopped) return
        timer = setTimeout(open, wait)
        wait = Math.min(wait * 2, STREAM_RETRY_MS_MAX)
      })
    })
  }
  open()
  return () => {
    stopped = true
    clearTimeout(timer)
    source.close()
  }
}

/**
 * Asks the server whether the session is still on; calls the signed-out
 * listener if not. Resolves whether it is (true when the server could not
 * be asked: the stream is tried again).
 */
async function checkSession() {
  const session = await api('GET', '/api/session', undefined, BACKGROUND).catch(() => undefined)
  if (session !== undefined && session.signedIn !== true) {
    onSignedOut()
    return false
  }
  return true
}
