/**
 * Typed errors. Each operating condition has one class with a stable `code`
 * that callers (firmware apps, admin tools, the wire protocol) switch on;
 * messages are for people and may change.
 */
import { limits } from './limits.js'

/** Every stable error code rostersync produces. */
export type ErrorCode =
  | 'INVALID_RECORD'
  | 'INVALID_OPTIONS'
  | 'USER_NOT_FOUND'
  | 'FORBIDDEN_WRITE'
  | 'MALFORMED_MESSAGE'
  | 'MESSAGE_TOO_LARGE'
  | 'PEER_REVOKED'
  | 'PEER_UNKNOWN'
  | 'AUTH_FAILED'
  | 'STORAGE_FAILED'
  | 'STORE_CLOSED'
  | 'PEER_CLOSED'
  | 'OFFLINE_NOT_READY'
  | 'SYNC_FAILED'
  | 'SYNC_TIMEOUT'
  | 'NO_SERVER'
  | 'SAVE_TO_SERVER_FAILED'
  | 'EXPORT_EXPIRED'
  | 'EXPORT_TOO_LARGE'

/** Base class: every error rostersync raises on purpose carries a `code`. */
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
    super('USER_NOT_FOUND', `user ${JSON.stringify(userId)} does not exist on this peer`)
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
  constructor(what: string, bytes: number, bytesMax: number) {
    super('MESSAGE_TOO_LARGE', `${what} is ${bytes} bytes; the limit is ${bytesMax}`)
  }
}

/** The peer was revoked by the server and is refused. */
export class PeerRevokedError extends RostersyncError {
  constructor(peerId: string) {
    super('PEER_REVOKED', `device ${JSON.stringify(peerId)} has been revoked`)
  }
}

/** The peer is not a member of this site. */
export class PeerUnknownError extends RostersyncError {
  constructor(peerId: string) {
    super('PEER_UNKNOWN', `peer ${JSON.stringify(peerId)} is not known to this site`)
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
 * could not persist this device's change; the device keeps its value).
 */
export class SyncError extends RostersyncError {
  constructor(
    code:
      | 'SYNC_FAILED'
      | 'SYNC_TIMEOUT'
      | 'NO_SERVER'
      | 'SAVE_TO_SERVER_FAILED'
      | 'PEER_REVOKED'
      | 'AUTH_FAILED',
    message: string,
    options?: { cause?: unknown },
  ) {
    super(code, message, options)
  }
}

// Issue 11: update bounds

/**
 * At most `charsMax` characters of `text` (a peer's input quoted in an error
 * message), with the count of what was cut: a refusal is sent back, logged
 * as an event and kept in the event log, so quoting a peer's input whole
 * would let one message write megabytes into every one of them.
 */
export function excerpt(text: string, charsMax: number = limits.peerInputExcerptCharsMax): string {
  if (text.length <= charsMax) return text
  let kept = text.slice(0, Math.max(0, charsMax))
  // Never end on half of a surrogate pair: the excerpt stays valid UTF-16.
  if (/[\uD800-\uDBFF]$/.test(kept)) kept = kept.slice(0, -1)
  return `${kept}… (${text.length - kept.length} more characters)`
}
