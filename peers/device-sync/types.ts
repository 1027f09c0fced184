/**
 * The names of the device's sync that others build on: `device.sync`'s
 * interface, its status, and the controller's options. Re-exported by
 * `peers/device-sync.ts`.
 */
import type { Clock } from '../../core/clock.js'
import type { Replica } from '../replica.js'
import type { LinkState, ServerLink, ServerLinkOptions } from '../ws-client.js'

/** State of one sync direction (API.md). */
export type SyncState = 'not-started' | 'in-progress' | 'success' | 'failed'

/** One direction's status. */
export interface DirectionStatus {
  readonly state: SyncState
  /** When it reached this state, ms since the epoch. */
  readonly at?: number
  readonly error?: { readonly code: string; readonly message: string }
}

/** `device.sync.status()`. */
export interface SyncStatus {
  readonly serverToDevice: DirectionStatus
  readonly deviceToServer: DirectionStatus
  /** True once a full sync has succeeded (and no wipe since): the device may work offline. */
  readonly offlineReady: boolean
  /** The link to the server: connected, or why not. */
  readonly link: LinkState | 'none'
  /**
   * While the link is not connected: why (the last attempt's error, or the
   * close code and reason: `connect ECONNREFUSED …`, `1006`, `1008: …`).
   */
  readonly waiting?: string
  /** While the link waits to reconnect: when its next attempt is due, ms since the epoch. */
  readonly nextAttemptAt?: number
  readonly lastFullSyncAt?: number
  /** When the device was last used (API call or sign-in). */
  readonly lastUsedAt: number
  /**
   * Set while what the device serves may be incomplete: it has not finished
   * a full sync and is not connected to the server (online only).
   */
  readonly warning?: string
  /** With LAN sync: how many peers have a sync link now, and the last link refused or failed. */
  readonly lan?: LanStatus
}

/** A device's LAN links (SyncStatus.lan). */
export interface LanStatus {
  readonly peers: number
  /** The last LAN link refused or failed (another site, a revoked peer, another generation, …). */
  readonly lastError?: { readonly code: string; readonly message: string; readonly at: number }
}

/** `device.sync` (API.md). */
export interface DeviceSyncApi {
  /** Pushes unsent changes, clears the replicated roster, fetches it whole. */
  full(): Promise<void>
  /** Exchanges only what each side lacks. */
  delta(): Promise<void>
  status(): SyncStatus
  /** Resolves when nothing is left to send to or receive from the server. */
  whenIdle(): Promise<void>
  /**
   * Resolves once the device is offline-ready: its first full sync has
   * succeeded (at once if it already has). Rejects if the device closes
   * first (`SYNC_FAILED`), has no server (`NO_SERVER`), or is refused by
   * the server for good (`AUTH_FAILED`, `PEER_REVOKED`). A failed attempt
   * does not reject it: the sync retries with its backoff. Counts as use
   * (retention), so a device wiped for retention starts its full sync.
   */
  whenReady(): Promise<void>
}

/** The link handlers the controller needs; createDevice builds the link with them. */
export type LinkFactory = (
  handlers: Pick<
    ServerLinkOptions,
    'onState' | 'onConnected' | 'onError' | 'paused' | 'onGeneration' | 'spreadsMove'
  >,
) => ServerLink

/** Options of {@link DeviceSync}. */
export interface DeviceSyncOptions {
  readonly replica: Replica
  readonly clock: Clock
  readonly random: () => number
  /** Builds the server link; undefined when the device has no server. */
  readonly link: LinkFactory | undefined
  readonly mode: 'live' | 'periodic'
  readonly deltaIntervalMs: number
  readonly retentionMs: number
  /**
   * The key (as its revocation id, `keyRevocationId`) that signed each
   * clientID of other writers' envelopes held for relay: a move carries
   * none of the entries of a key revoked by the time it commits.
   */
  readonly clientKeys?: () => ReadonlyMap<number, string>
}

/** What the sync controller keeps across restarts (a peer-local record). */
export interface Persisted {
  readonly offlineReady: boolean
  readonly lastFullSyncAt?: number
  readonly lastUsedAt: number
  /** Wiped for retention: no sync until the device is used again. */
  readonly awaitingUse: boolean
  /** Own clientIDs' clocks the server acknowledged at the last round that pushed (./unsent.ts). */
  readonly acked?: ReadonlyArray<readonly [number, number]>
}
