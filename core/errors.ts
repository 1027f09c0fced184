/**
 * Typed errors. Each operating condition has one class with a stable `code`
 * that callers (firmware apps, admin tools, the wire protocol) switch on;
 * messages are for people and may change.
 */
import { limits } from './limits.js'

/** Every stable error code rostersync produces. */
export const ERROR_CODES = [
  'INVALID_RECORD',
  'INVALID_OPTIONS',
  'USER_NOT_FOUND',
  'GROUP_NOT_FOUND',
  'USER_EXISTS',
  'FORBIDDEN_WRITE',
  'MALFORMED_MESSAGE',
  'MESSAGE_TOO_LARGE',
  'PEER_REVOKED',
  'PEER_UNKNOWN',
  'AUTH_FAILED',
  'STORAGE_FAILED',
  'STORE_CLOSED',
  'PEER_CLOSED',
  'OFFLINE_NOT_READY',
  'SYNC_FAILED',
  'SYNC_TIMEOUT',
  'NO_SERVER',
  'SAVE_TO_SERVER_FAILED',
  'EXPORT_EXPIRED',
  'EXPORT_TOO_LARGE',
  // Issue 11: front door
  'MALFORMED_REQUEST',
  'ID_CONFLICT',
  'PEER_PENDING',
  'REGISTRY_FULL',
  'SESSION_REPLACED',
  'NOT_FOUND',
  'METHOD_NOT_ALLOWED',
  // Issue 11: floods
  'RATE_LIMITED',
  'TOO_MANY_QUEUED_MESSAGES',
  'TOO_MANY_HELD_BACK',
  'IMPLAUSIBLE_STATE_VECTOR',
  'TOO_MANY_HANDSHAKES',
  'TOO_MANY_LINKS',
  // Issue 11: signed writes
  'SIGNATURE_INVALID',
  // Issue 10: admin page
  'CSRF_REFUSED',
  'TOO_MANY_STREAMS',
  // Issue 10: export / import, the command line
  'SYNC_RUNNING',
  'WRONG_DATA_DIR',
  'TOO_MANY_USERS',
  // Issue 11: export files and LAN certificates
  'EXPORT_FORMAT_UNSUPPORTED',
  'EXPORT_PASSPHRASE_INVALID',
  'EXPORT_SITE_KEY_REQUIRED',
  'CERTIFICATE_EXPIRED',
  'CERTIFICATE_REVOKED',
  // Issue 13: generations
  'GENERATION_CHANGED',
  // A device's clock far from the server's (a join is refused once, then made in the server's time)
  'CLOCK_SKEW',
  // The server presents another key than the one the device pinned
  'SERVER_KEY_CHANGED',
  'TOO_MANY_MOVES',
] as const

/** A stable error code (ERROR_CODES). */
export type ErrorCode = (typeof ERROR_CODES)[number]

const KNOWN_CODES: ReadonlySet<string> = new Set(ERROR_CODES)

/** True when `code` is one rostersync produces (a peer's error message may name any). */
export const isErrorCode = (code: string): code is ErrorCode => KNOWN_CODES.has(code)

/** Base class: every error rostersync raises on purpose carries a `code`. */
/**
 * Makes an error without capturing a stack trace, for errors made by the
 * thousand where the stack would only show a timer or a teardown (a sync
 * answer that timed out, the waiters of a closed connection): capturing it
 * cost a few per cent of a simulated run on a lossy network.
 */
export function withoutStack<T extends Error>(make: () => T): T {
  const limit = Error.stackTraceLimit
  Error.stackTraceLimit = 0
  try {
    return make()
  } finally {
    Error.stackTraceLimit = limit
  }
}

export class RostersyncError extends Error {
  readonly code: ErrorCode
  /** Optional structured detail (e.g. zod issues for `INVALID_RECORD`). */
  readonly details: unknown

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; details?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause })
    this.name = new.target.name
    this.code = code
    this.details = options?.details
  }
}

/** A record (or patch) failed schema validation; nothing was changed. */
export class InvalidRecordError extends RostersyncError {
  constructor(message: string, details?: unknown) {
    super('INVALID_RECORD', message, { details })
  }
}

/** Options passed to a factory or command are invalid. */
export class InvalidOptionsError extends RostersyncError {
  constructor(message: string, details?: unknown) {
    super('INVALID_OPTIONS', message, { details })
  }
}

/** The user is not in this peer's view (patch of an absent user, ...). */
export class UserNotFoundError extends RostersyncError {
  constructor(userId: string) {
    super('USER_NOT_FOUND', `user ${excerpt(userId)} does not exist on this peer`)
  }
}

/** An export named a group no live user of the server is in (a typo gives no empty file). */
export class GroupNotFoundError extends RostersyncError {
  constructor(groupId: string) {
    super('GROUP_NOT_FOUND', `no user of this server is in group ${excerpt(groupId)}`)
  }
}

/** A create-only write (`PUT` with `If-None-Match: *`) named a user who exists. */
export class UserExistsError extends RostersyncError {
  constructor(userId: string) {
    super('USER_EXISTS', `user ${excerpt(userId)} exists already; edit it, or delete it first`)
  }
}

/** A peer tried to write into a part of the roster it does not own. */
export class ForbiddenWriteError extends RostersyncError {
  constructor(message: string, details?: unknown) {
    super('FORBIDDEN_WRITE', message, { details })
  }
}

/** Bytes that do not decode as a valid message or update. */
export class MalformedMessageError extends RostersyncError {
  constructor(message: string, cause?: unknown) {
    super('MALFORMED_MESSAGE', message, { cause })
  }
}

/** A message or payload above its named limit. */
export class MessageTooLargeError extends RostersyncError {
  constructor(what: string, bytes: number, bytesMax: number, unit = 'bytes') {
    super('MESSAGE_TOO_LARGE', `${what} is ${bytes} ${unit}; the limit is ${bytesMax}`)
  }
}

/** The peer was revoked by the server and is refused. */
export class PeerRevokedError extends RostersyncError {
  constructor(peerId: string) {
    super('PEER_REVOKED', `device ${excerpt(peerId)} has been revoked`)
  }
}

/** The peer is not a member of this site. */
export class PeerUnknownError extends RostersyncError {
  constructor(peerId: string) {
    super('PEER_UNKNOWN', `peer ${excerpt(peerId)} is not known to this site`)
  }
}

/** The site key did not match. */
export class AuthFailedError extends RostersyncError {
  constructor(message = 'site key rejected') {
    super('AUTH_FAILED', message)
  }
}

/** The durable store failed; the operation did not take effect. */
export class StorageError extends RostersyncError {
  constructor(message: string, cause?: unknown) {
    super('STORAGE_FAILED', message, { cause })
  }
}

/** The store was used after close. */
export class StoreClosedError extends RostersyncError {
  constructor() {
    super('STORE_CLOSED', 'the store is closed')
  }
}

/** The peer was used after close. */
export class PeerClosedError extends RostersyncError {
  constructor() {
    super('PEER_CLOSED', 'the peer is closed')
  }
}

/** True when `error` is a rostersync error with the given code. */
export function hasCode(error: unknown, code: ErrorCode): boolean {
  return error instanceof RostersyncError && error.code === code
}

/**
 * A sync with the server failed: `SYNC_FAILED` (unreachable, refused, the
 * link dropped), `SYNC_TIMEOUT` (no answer in time), `NO_SERVER` (the
 * device has no server configured), `SAVE_TO_SERVER_FAILED` (the server
 * could not persist this device's change; the device keeps its value),
 * `PEER_PENDING` (the server holds the device for the administrator's
 * approval; it retries with its backoff).
 */
export class SyncError extends RostersyncError {
  constructor(
    code:
      | 'SYNC_FAILED'
      | 'SYNC_TIMEOUT'
      | 'NO_SERVER'
      | 'SAVE_TO_SERVER_FAILED'
      | 'PEER_REVOKED'
      | 'AUTH_FAILED'
      | 'SERVER_KEY_CHANGED'
      | 'PEER_PENDING',
    message: string,
    options?: { cause?: unknown },
  ) {
    super(code, message, options)
  }
}

// Issue 11: front door

/**
 * A bounded, quoted excerpt of untrusted input for an error message or an
 * event: at most `charsMax` characters, JSON-quoted (so control characters,
 * newlines and ANSI escapes show as escapes and cannot forge log lines),
 * with the full length noted when it was cut. An error must never carry a
 * caller's whole input: a 2 MB id would become a 2 MB log entry.
 */
export function excerpt(text: string, charsMax: number = limits.errorExcerptCharsMax): string {
  if (text.length <= charsMax) return JSON.stringify(text)
  let cut = text.slice(0, Math.max(0, charsMax))
  // Never end on half a surrogate pair.
  if (/[\uD800-\uDBFF]$/.test(cut)) cut = cut.slice(0, -1)
  return `${JSON.stringify(cut)}… (${text.length} characters)`
}

/** A request (join URL, HTTP request target or path) that does not parse. */
export class MalformedRequestError extends RostersyncError {
  constructor(message: string) {
    super('MALFORMED_REQUEST', message)
  }
}

/**
 * An id that collides with one taken: `server` in any case (reserved), or
 * a registered device's id in another case. Ids are compared exactly as
 * stored, so two ids differing only by case would otherwise be two devices
 * to the server and one to a person reading the registry.
 */
export class IdConflictError extends RostersyncError {
  constructor(id: string, taken: string) {
    super('ID_CONFLICT', `id ${excerpt(id)} conflicts with ${excerpt(taken)}`)
  }
}

/** The device waits for the administrator's approval (approval mode). */
export class PeerPendingError extends RostersyncError {
  constructor(peerId: string) {
    super('PEER_PENDING', `device ${excerpt(peerId)} waits for approval by the administrator`)
  }
}

/** The device registry is at its named limit; a new device is refused. */
export class RegistryFullError extends RostersyncError {
  constructor(what: string, max: number) {
    super('REGISTRY_FULL', `the registry holds ${max} ${what}, its limit`)
  }
}

/** A newer connection with the same device id replaced this one. */
export class SessionReplacedError extends RostersyncError {
  constructor(peerId: string) {
    super('SESSION_REPLACED', `a newer connection of device ${excerpt(peerId)} replaced this one`)
  }
}

/** No such endpoint (HTTP API). */
export class NotFoundError extends RostersyncError {
  constructor(message: string) {
    super('NOT_FOUND', message)
  }
}

/** The endpoint exists but not with this method (HTTP API); `allow` lists the methods it takes. */
export class MethodNotAllowedError extends RostersyncError {
  constructor(
    method: string,
    readonly allow: readonly string[],
  ) {
    super(
      'METHOD_NOT_ALLOWED',
      `${excerpt(method, 16)} is not allowed here; use ${allow.join(', ')}`,
    )
  }
}

// Issue 11: floods

/** A link sent more (messages, bytes, step 1s) per second than its named limit allows. */
export class RateLimitedError extends RostersyncError {
  constructor(what: string, perSecondMax: number) {
    super('RATE_LIMITED', `more ${what} per second than the limit of ${perSecondMax}`)
  }
}

/** A link sent messages faster than they could be applied, past the queue's bound. */
export class QueueFullError extends RostersyncError {
  constructor(what: string, max: number) {
    super('TOO_MANY_QUEUED_MESSAGES', `more than ${max} ${what} waiting on this connection`)
  }
}

/**
 * A link has too many updates held back (waiting for earlier operations
 * that have not arrived); the update was refused, nothing of it applied.
 */
export class HeldBackLimitError extends RostersyncError {
  constructor(what: string, max: number) {
    super('TOO_MANY_HELD_BACK', `this link has more than ${max} ${what} held back`)
  }
}

/**
 * A state vector claims operations of a clientID that cannot exist
 * elsewhere (one this peer minted in this process): a lie, ignored.
 */
export class ImplausibleStateVectorError extends RostersyncError {
  constructor(clientId: number, claimed: number, held: number) {
    super(
      'IMPLAUSIBLE_STATE_VECTOR',
      `the state vector claims ${claimed} operations of clientID ${clientId}, freshly minted here with ${held}`,
    )
  }
}

/**
 * Too many links are at this peer's door (not admitted yet) at once
 * (`netLimits.lanHandshakesInFlightMax`); retry with backoff.
 */
export class HandshakesFullError extends RostersyncError {
  constructor(max: number) {
    super('TOO_MANY_HANDSHAKES', `${max} LAN links are waiting to be admitted already, the limit`)
  }
}

/** A device's certificate has as many LAN links at this peer as it may (`lanLinksPerDeviceMax`). */
export class TooManyLinksError extends RostersyncError {
  constructor(deviceId: string, max: number) {
    super(
      'TOO_MANY_LINKS',
      `device ${excerpt(deviceId)} has ${max} LAN links here already, the limit`,
    )
  }
}

// Issue 11: update bounds

/**
 * Unquoted, for text already set in a sentence (compare `excerpt`, which
 * quotes): at most `charsMax` characters of `text` (a peer's input quoted in an error
 * message), with the count of what was cut: a refusal is sent back, logged
 * as an event and kept in the event log, so quoting a peer's input whole
 * would let one message write megabytes into every one of them.
 */
export function clip(text: string, charsMax: number = limits.peerInputExcerptCharsMax): string {
  if (text.length <= charsMax) return text
  let kept = text.slice(0, Math.max(0, charsMax))
  // Never end on half of a surrogate pair: the excerpt stays valid UTF-16.
  if (/[\uD800-\uDBFF]$/.test(kept)) kept = kept.slice(0, -1)
  return `${kept}… (${text.length - kept.length} more characters)`
}

// Issue 11: signed writes

/**
 * A signed envelope, certificate or join proof does not verify: wrong key,
 * another site, altered bytes, or a clientID not derived from the writer's key.
 */
export class SignatureInvalidError extends RostersyncError {
  constructor(message: string, details?: unknown) {
    super('SIGNATURE_INVALID', message, { details })
  }
}

// Issue 10: admin page

/**
 * A state-changing request authenticated by the admin page's session cookie
 * came without the page's CSRF header, or from another origin.
 */
export class CsrfRefusedError extends RostersyncError {
  constructor(message: string) {
    super('CSRF_REFUSED', message)
  }
}

/** Every live update stream the server allows is open already. */
export class TooManyStreamsError extends RostersyncError {
  constructor(max: number) {
    super('TOO_MANY_STREAMS', `${max} live update streams are open, the limit`)
  }
}

// Issue 10: export / import, the command line

/** An export file past its expiry (a prepared export lives `limits.exportTtlMs`). */
export class ExportExpiredError extends RostersyncError {
  constructor(expiresAt: number, now: number) {
    super(
      'EXPORT_EXPIRED',
      `the export expired at ${new Date(expiresAt).toISOString()} (${Math.round((now - expiresAt) / 1000)} s ago); export again`,
    )
  }
}

/** An export asks for (or a file holds) more users or groups than the named limit. */
export class ExportTooLargeError extends RostersyncError {
  /** `count` is where counting stopped (past `max`) when `more` is set: the message says "more than". */
  constructor(what: string, count: number, max: number, more = false) {
    super(
      'EXPORT_TOO_LARGE',
      more
        ? `the export holds more than ${max} ${what}; the limit is ${max}`
        : `the export holds ${count} ${what}; the limit is ${max}`,
    )
  }
}

/**
 * A write on a device that has never completed a full sync while its server
 * is out of reach (SEMANTICS.md: offline mode only after one full sync).
 */
export class OfflineNotReadyError extends RostersyncError {
  constructor(link: string) {
    super(
      'OFFLINE_NOT_READY',
      `this device is not offline-ready (no full sync completed yet, or none since its roster was wiped), and until one completes it works online only: its server is not connected (${link}); the write changed nothing (sync.whenReady() waits for that sync)`,
    )
  }
}

/**
 * `device.importUsers` on a device connected to its server: an import is
 * for a device whose sync is stopped (no server link, or the server out of
 * reach); a connected device gets the server's data by syncing.
 */
export class SyncRunningError extends RostersyncError {
  constructor(message: string) {
    super('SYNC_RUNNING', message)
  }
}

/**
 * A command pointed at a data directory of the wrong role: a device's data
 * opened as a server's (or the reverse). Nothing in it was changed.
 */
export class WrongDataDirError extends RostersyncError {
  constructor(message: string) {
    super('WRONG_DATA_DIR', message)
  }
}

/**
 * `GET /api/users?all=1` matched more users than one response may carry
 * (`netLimits.usersAllMax`): page with `limit` and `after`, or narrow the
 * filters.
 */
export class TooManyUsersError extends RostersyncError {
  constructor(max: number, bytes = false) {
    super(
      'TOO_MANY_USERS',
      bytes
        ? `all=1: the matching users take more than ${max} bytes, the most one response carries (netLimits.usersPageBytesMax); page with limit and after, or narrow q, status or group`
        : `all=1: more than ${max} users match, the most one response carries (netLimits.usersAllMax); page with limit and after, or narrow q, status or group`,
    )
  }
}

// Issue 11: export files and LAN certificates

/**
 * An export file of another format than this rostersync reads (an older,
 * unencrypted one, or a newer one): nothing of it is read; export again.
 */
export class ExportFormatError extends RostersyncError {
  constructor(version: number, supported: number) {
    super(
      'EXPORT_FORMAT_UNSUPPORTED',
      `export format ${version} is not supported (this rostersync reads format ${supported} only${version < supported ? ': the file was made by an older rostersync, without encryption; export it again' : ''})`,
    )
  }
}

/**
 * The passphrase of an export: missing, too short or too long (when
 * exporting), or not the one the file was encrypted with (when importing).
 */
export class ExportPassphraseError extends RostersyncError {
  constructor(message: string) {
    super('EXPORT_PASSPHRASE_INVALID', message)
  }
}

/**
 * An export file encrypted under the site key, on a device that has no
 * site key: nothing of it can be read. Open the device with its site's key.
 * Also a server's export when the server does not know its site key (an
 * offline tool on a server that was given its key).
 */
export class ExportSiteKeyRequiredError extends RostersyncError {
  constructor(
    message = 'the export file is encrypted under the site key, and this device has none: open the device with its site key (createDevice({ siteKey }); --site-key-file or ROSTERSYNC_SITE_KEY)',
  ) {
    super('EXPORT_SITE_KEY_REQUIRED', message)
  }
}

/** A device certificate past its expiry (`limits.certificateTtlMs`): the device renews it from its server. */
export class CertificateExpiredError extends RostersyncError {
  constructor(deviceId: string, expiresAt: number, now: number) {
    super(
      'CERTIFICATE_EXPIRED',
      `the certificate of device ${excerpt(deviceId)} expired at ${new Date(expiresAt).toISOString()} (${Math.round((now - expiresAt) / 1000)} s ago)`,
    )
  }
}

/** A device certificate for a key the server has since reset (`devices.resetKey`). */
export class CertificateRevokedError extends RostersyncError {
  constructor(deviceId: string) {
    super(
      'CERTIFICATE_REVOKED',
      `the certificate of device ${excerpt(deviceId)} is for a key its server has reset`,
    )
  }
}

/**
 * The peer is on another generation of the site's document (issue 13,
 * history compaction): nothing is exchanged across generations; the one
 * on the older generation moves (one full sync) when it reaches its
 * server. Close code 4412.
 */
export class GenerationChangedError extends RostersyncError {
  constructor(message: string) {
    super('GENERATION_CHANGED', message)
  }
}
