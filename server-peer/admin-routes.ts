/**
 * The HTTP routes the admin page adds to the JSON API: sign-in and
 * sign-out (`/api/session`), the sources of a user's fields, field policies
 * with the consequence of a change (rule 5), live updates (`/api/stream`)
 * (exports are served by export-route.ts). `http-api.ts` authenticates and routes; these serve.
 */
import { createHash } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { FieldPolicy } from '../core/entries.js'
import { InvalidOptionsError } from '../core/errors.js'
import type { EventQuery, RosterEvent } from '../core/events.js'
import type { RecordSchema } from '../core/schema.js'
import type { Replica } from '../peers/replica.js'
import {
  AdminSessions,
  checkCsrf,
  clearedSessionCookie,
  sessionCookie,
  isBackground,
  sessionIdOf,
} from './admin-sessions.js'
import { AdminStreams } from './admin-stream.js'
import type { DeviceRecord, DeviceRegistry } from './device-registry.js'
import { fieldSources } from './field-sources.js'
import { checkPolicyChange, policyPreview } from './policy-preview.js'
import { checkQueryParams, UserIndex } from './user-search.js'

/** The server's parts the admin routes serve. */
export interface AdminParts {
  readonly adminToken: string
  /** Host names the admin page answers on besides IP addresses and localhost (checkHost). */
  readonly hosts: ReadonlySet<string>
  readonly now: () => number
  readonly replica: Replica
  readonly schema: RecordSchema
  readonly registry: DeviceRegistry
  /** The fingerprint of the key bound to a device (`GET /api/devices`'s `keyFingerprint`). */
  readonly keyFingerprintOf: (deviceId: string) => string | undefined
  /**
   * The server's own key fingerprint (`GET /api/session`, signed in): what
   * a device never admitted by this server is given to import an export.
   */
  readonly serverKeyFingerprint: string
  readonly events: { query(q: EventQuery): RosterEvent[] }
  setFieldPolicies(policies: Readonly<Record<string, FieldPolicy>>): Promise<string[]>
}

/** The admin page's server-side state: sessions, live streams, the user index. */
export class AdminConsole {
  readonly sessions: AdminSessions
  readonly streams: AdminStreams
  readonly users: UserIndex

  constructor(readonly parts: AdminParts) {
    this.sessions = new AdminSessions(parts.adminToken, parts.now)
    this.streams = new AdminStreams({
      events: parts.replica.events,
      devices: {
        get changes() {
          return parts.registry.changes
        },
        // The rows of GET /api/devices: a streamed row replaces the page's
        // row whole, and lacked the key fingerprint (Reset key went grey).
        // One row object per registry record: the stream sends the rows
        // whose object changed, so a fresh copy each time sent them all.
        list: () => parts.registry.list().map((record) => this.rowOf(record)),
      },
    })
    this.users = new UserIndex(parts.replica)
  }

  private readonly rows = new WeakMap<DeviceRecord, DeviceRecord>()

  /** A registry record as `GET /api/devices` shows it, made once per record. */
  private rowOf(record: DeviceRecord): DeviceRecord {
    let row = this.rows.get(record)
    if (row === undefined) {
      const fingerprint = this.parts.keyFingerprintOf(record.id)
      row = fingerprint === undefined ? record : { ...record, keyFingerprint: fingerprint }
      this.rows.set(record, row)
    }
    return row
  }

  /** Ends the live streams and stops following the replica (the server is closing). */
  close(): void {
    this.streams.close()
    this.users.close()
  }
}

type Reply = (res: ServerResponse, status: number, body: unknown, headers?: Headers) => void
type Headers = Readonly<Record<string, string>>

/**
 * `/api/session`: `POST { token }` signs in (sets the cookie), `GET` says
 * whether the cookie's session is live (`{ signedIn }`), `DELETE` signs out. POST and
 * DELETE need the CSRF header like every change.
 */
export async function serveSession(
  admin: AdminConsole,
  method: string,
  req: IncomingMessage,
  res: ServerResponse,
  body: () => Promise<unknown>,
  reply: Reply,
): Promise<void> {
  const id = sessionIdOf(req, admin.sessions)
  if (method === 'GET') {
    const expiresAt = admin.sessions.use(id, !isBackground(req))
      ? admin.sessions.expiresAt(id)
      : undefined
    // Not an error: the page asks this on every load, signed in or not.
    return reply(
      res,
      200,
      expiresAt === undefined
        ? { signedIn: false }
        : { signedIn: true, expiresAt, serverKeyFingerprint: admin.parts.serverKeyFingerprint },
    )
  }
  checkCsrf(req)
  if (method === 'DELETE') {
    admin.sessions.signOut(id)
    return reply(res, 200, { ok: true }, { 'set-cookie': clearedSessionCookie() })
  }
  const input = await body()
  const token =
    typeof input === 'object' && input !== null && 'token' in input ? input.token : undefined
  const session = admin.sessions.signIn(token, req.socket.remoteAddress ?? '')
  // A new sign-in replaces the session this browser had.
  admin.sessions.signOut(id)
  return reply(
    res,
    200,
    { signedIn: true, expiresAt: session.expiresAt },
    { 'set-cookie': sessionCookie(session.id) },
  )
}

/** `GET /api/users/:id/sources`. */
export function serveSources(admin: AdminConsole, id: string, res: ServerResponse, reply: Reply) {
  return reply(res, 200, fieldSources(admin.parts.replica, admin.parts.events, id))
}

/**
 * `/api/policies`: `GET` lists every field with its kind and policy;
 * `PUT { field: policy, ... }` changes some (all checked first: a bad one
 * changes nothing). `/api/policies/preview?field=&policy=` says what a
 * change would do.
 */
export async function servePolicies(
  admin: AdminConsole,
  method: string,
  preview: boolean,
  url: URL,
  body: () => Promise<unknown>,
  res: ServerResponse,
  reply: Reply,
  /** Throws the refusal of a change whose If-Match does not name `tag` (the policies' now). */
  precondition?: (tag: string) => void,
): Promise<void> {
  const { replica, schema } = admin.parts
  if (preview) {
    checkQueryParams(url.searchParams, ['field', 'policy'], 'GET /api/policies/preview')
    const field = url.searchParams.get('field')
    const policy = url.searchParams.get('policy')
    if (field === null || policy === null)
      throw new InvalidOptionsError(
        'GET /api/policies/preview needs ?field=<a field>&policy=<shared|device-specific|last-writer-wins>',
      )
    checkPolicyChange(schema, field, policy)
    // The tag of the policies the preview was made of: a change confirmed
    // from it sends it back (If-Match), refused once another changed them.
    const tag = policiesTag(admin)
    const shown = policyPreview(replica, schema, field ?? '', policy as FieldPolicy)
    return reply(res, 200, { ...shown, etag: tag }, { etag: tag })
  }
  if (method === 'PUT') {
    const input = await body()
    if (typeof input !== 'object' || input === null || Array.isArray(input))
      throw new InvalidOptionsError('the body must be a JSON object of field: policy')
    for (const [field, policy] of Object.entries(input)) checkPolicyChange(schema, field, policy)
    // Checked after the body is read: nothing may change the policies in between.
    precondition?.(policiesTag(admin))
    const changed = await admin.parts.setFieldPolicies(input as Record<string, FieldPolicy>)
    return reply(res, 200, { changed, fields: policyList(admin) }, { etag: policiesTag(admin) })
  }
  return reply(res, 200, { fields: policyList(admin) }, { etag: policiesTag(admin) })
}

/** The strong entity tag of the site's field policies (GET /api/policies, its preview). */
export function policiesTag(admin: AdminConsole): string {
  const text = JSON.stringify(policyList(admin).map((f) => [f.field, f.policy]))
  return `"${createHash('sha256').update(text).digest('base64url').slice(0, 27)}"`
}

function policyList(admin: AdminConsole) {
  const { replica, schema } = admin.parts
  const policies = replica.policies()
  return schema.fieldNames.map((field) => ({
    field,
    kind: schema.fieldKinds[field] ?? 'text',
    policy: policies.get(field)?.p ?? 'shared',
  }))
}
