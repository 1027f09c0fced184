/**
 * Small pure helpers of the device's sync: the status's view of the link,
 * the errors a sync fails with, and when an answer covers a state.
 */
import { RostersyncError, SyncError, withoutStack } from '../../core/errors.js'
import type { ServerLink } from '../ws-client.js'
import { userOfMessage } from '../sync-session/inbound.js'

/** The most exchanges one sync makes to get its changes acknowledged. */
export const PUSH_ROUNDS_MAX = 3

/** The link's wait, for the status: why it is not connected and when it tries next. */
export function linkWait(link: ServerLink | undefined): {
  waiting?: string
  nextAttemptAt?: number
} {
  const waiting = link?.reason
  const next = link?.nextAttemptAt
  return {
    ...(waiting === undefined || link?.state === 'connected' ? {} : { waiting }),
    ...(next === undefined ? {} : { nextAttemptAt: next }),
  }
}

/**
 * The server refused the device for good: `PEER_REVOKED` when the close
 * said so, else `AUTH_FAILED`. `detail` is the close's reason
 * (`PEER_REVOKED`, `AUTH_FAILED: join proof …`) or the link's last
 * failure (`4403: PEER_REVOKED`), when known.
 */
export function refusedError(detail: string | undefined): SyncError {
  const reason = detail === undefined || detail === '' ? 'refused' : `refused: ${detail}`
  // The refusals that say more than "not admitted": revoked by the
  // administrator, or a server whose key is not the one this device pinned
  // (another site, or someone in between: resetting the device is the cure).
  const code = /^(?:\d+: )?(PEER_REVOKED|SERVER_KEY_CHANGED)\b/.exec(detail ?? '')?.[1]
  return new SyncError(
    code === 'PEER_REVOKED' || code === 'SERVER_KEY_CHANGED' ? code : 'AUTH_FAILED',
    `the server refused this device (${reason})`,
  )
}

/** Whether a close's reason (`4423: PEER_PENDING: …`) says the device waits for approval. */
const waitsForApproval = (detail: string | undefined): boolean =>
  /^(?:\d+: )?PEER_PENDING\b/.test(detail ?? '')

/**
 * The link to the server is down (`state`, and why when known; `lastClose`:
 * the link's last failure): `SYNC_FAILED`, or `PEER_PENDING` while the
 * server holds the device for the administrator's approval (it retries
 * with its backoff).
 */
export function unreachable(
  state: string,
  detail: string | undefined,
  lastClose?: string,
): SyncError {
  const reason = detail === undefined || detail === '' ? state : `${state}: ${detail}`
  // Made at every change of the link's state (a lossy network makes them by
  // the thousand); the stack would only show a socket's event.
  if (waitsForApproval(detail) || waitsForApproval(lastClose))
    return withoutStack(
      () =>
        new SyncError(
          'PEER_PENDING',
          `the server holds this device for the administrator's approval (${lastClose ?? reason})`,
        ),
    )
  return withoutStack(() => new SyncError('SYNC_FAILED', `the server is unreachable (${reason})`))
}

/** True when `theirs` holds every operation `ours` holds. */
export function covers(theirs: Map<number, number>, ours: Map<number, number>): boolean {
  for (const [client, clock] of ours) if ((theirs.get(client) ?? 0) < clock) return false
  return true
}

export function asSyncError(
  error: unknown,
  refusal?: { code: string; message: string },
  closedWith?: string,
): SyncError {
  if (
    refusal?.code === 'STORAGE_FAILED' &&
    !(error instanceof SyncError && error.code !== 'SYNC_FAILED')
  )
    return new SyncError('SAVE_TO_SERVER_FAILED', `the server could not save: ${refusal.message}`, {
      cause: error,
    })
  if (refusal !== undefined && !(error instanceof SyncError && error.code !== 'SYNC_FAILED'))
    return new SyncError(
      'SYNC_FAILED',
      `the server refused a change: ${refusal.code}: ${refusal.message}`,
      { cause: error },
    )
  if (error instanceof SyncError) return error
  // The connection closed under the sync: the server's close says why
  // (`4423: PEER_PENDING: waiting for the administrator's approval`).
  if (error instanceof Error && error.message === 'connection closed' && closedWith !== undefined)
    return new SyncError(
      waitsForApproval(closedWith) ? 'PEER_PENDING' : 'SYNC_FAILED',
      `connection closed (${closedWith})`,
      { cause: error },
    )
  if (error instanceof RostersyncError)
    return new SyncError('SYNC_FAILED', `${error.code}: ${error.message}`, { cause: error })
  return new SyncError('SYNC_FAILED', error instanceof Error ? error.message : String(error), {
    cause: error,
  })
}

/** `{ userId }` when a server's error message names the user it concerns (sync-session/inbound.ts, withUser). */
export function userNamed(message: string): { userId?: string } {
  const userId = userOfMessage(message)
  return userId === undefined ? {} : { userId }
}

/** `status().warning` of a device not offline-ready while its server is not connected. */
export const ONLINE_ONLY =
  'ONLINE_ONLY: this device has not completed a full sync; what it serves offline may be incomplete, and it takes no write until its server is connected'

/** Whom a device without a server tells so. */
export const noServer = (what: string): SyncError =>
  new SyncError('NO_SERVER', `this device has no server: ${what}`)

/** The `restore-detected` event of a server found lacking `lost` operations of its own. */
export const restoredMessage = (lost: number): string =>
  `the server lacks ${lost} operation(s) of its own this device holds: it lost them (its data directory restored from a backup, or a crash); fetching its roster whole, this device's own entries carried`

/** The `restore-detected` event of a server refusing an epoch of this device's it no longer holds. */
export const restoredBehindEpoch =
  "the server refused this device's entry of a user at an epoch above its own: it lost a delete this device had seen (its data directory restored from a backup); fetching its roster whole, this device's own entries carried on the users it holds"
