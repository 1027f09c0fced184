/**
 * `createDevice`: a device peer (access-control terminal, printer, mustering
 * tablet). It writes into its own part of the roster; its deletes and its
 * device-specific fields stay on it.
 */
import { isIP } from 'node:net'
import { z } from 'zod'
import { parseEventQuery, type EventQuery, type RosterEvent } from '../core/events.js'
import { detached } from '../core/detach.js'
import { InvalidOptionsError, OfflineNotReadyError, UserNotFoundError } from '../core/errors.js'
import { asWriterId, isReservedWriterId, SERVER_ID } from '../core/ids.js'
import { limits, netLimits } from '../core/limits.js'
import { deviceOps, OverrideLog } from './device-ops.js'
import {
  commonOptionsShape,
  parseOptions,
  peerBasics,
  type CommonPeerOptions,
  type PeerBasics,
} from './peer-options.js'
import { startLan, type LanNode } from './lan-sync.js'
import { LogLimiter } from './log-limiter.js'
import { checkLanListen, checkLanPeers } from '../transports/lan-addresses.js'
import { pinHasher } from './pin.js'
import { holdProcess } from './system-clock.js'
import { Replica } from './replica.js'
import { checkUpdate } from '../core/authorize.js'
import { EnvelopeLog } from './envelope-log.js'
import { keyFingerprint, keyRevocationId } from '../core/signing.js'
import { Identity } from './identity.js'
import { DeviceSigning } from './signed-link.js'
import { serverLinkSigning } from './server-link-signing.js'
import { usersApi, type UsersApi } from './user-ops.js'
import { connectToServer, type ServerLink } from './ws-client.js'
import { DeviceSync, type DeviceSyncApi } from './device-sync.js'
import type { LanStatus } from './device-sync/types.js'
import { runLanLink } from './lan-sync.js'
import type { Connection, Transport } from '../core/transport.js'
import { importUsers, type ImportResult } from './import-users.js'
import { claimRole } from './data-role.js'

/** Where a device keeps the name it was last given (createDevice). */
const DEVICE_NAME_RECORD = ['device', 'name'] as const

/** A server key's fingerprint as the server prints it (core/signing.ts keyFingerprint). */
const KEY_FINGERPRINT_PATTERN = /^SHA256:[A-Za-z0-9+/]{43}$/

/** Options of {@link createDevice} (API.md). */
export interface DeviceOptions extends CommonPeerOptions {
  /** Stable device id, e.g. its serial number. */
  readonly id: string
  readonly name?: string
  /** The server's WebSocket URL (`server.url`); omitted: no server link. */
  readonly server?: string
  readonly siteKey?: string
  /**
   * The fingerprint of the server's key (`SHA256:…`, printed by the server
   * and shown in its registry), for a device provisioned before its first
   * admission: the first hello must present that key (else the link is
   * refused, `SERVER_KEY_CHANGED`), and export files of that key can be
   * imported before the device was ever admitted.
   */
  readonly serverKeyFingerprint?: string
  readonly lan?: {
    readonly enabled: boolean
    readonly port?: number
    readonly peers?: readonly string[]
    /** mDNS discovery of other devices; on by default. */
    readonly mdns?: boolean
    /** Interface the LAN node listens on; loopback by default. */
    readonly host?: string
  }
  /**
   * `live` (default): changes flow both ways as they happen, and a delta
   * sync runs every `deltaIntervalMs` as well; `periodic`: changes move only
   * in the delta sync every `deltaIntervalMs`.
   */
  readonly mode?: 'live' | 'periodic'
  /** From the end of one sync to the next delta sync; 30 minutes by default. */
  readonly deltaIntervalMs?: number
  /** Unused this long (no API call, no sign-in), the device wipes its roster; 10 days by default. */
  readonly retentionMs?: number
  /**
   * Opens the server link over this transport instead of WebSocket (the
   * simulator's, an in-memory one); `connect` receives the join URL.
   */
  readonly serverTransport?: Transport
}

/** Default interval of delta syncs: 30 minutes. */
export const DEFAULT_DELTA_INTERVAL_MS = 1_800_000
/** Default retention: 10 days. */
export const DEFAULT_RETENTION_MS = 864_000_000

const deviceOptionsSchema = z.strictObject({
  ...commonOptionsShape,
  id: z
    .string()
    .min(1)
    .max(limits.writerIdCharsMax)
    .regex(/^[A-Za-z0-9][A-Za-z0-9._:-]*$/, 'letters, digits and . _ : - only')
    .refine((id) => !isReservedWriterId(id), 'a device cannot be called "server" (in any case)'),
  name: z.string().max(limits.textCharsMax).optional(),
  server: z
    .string()
    .regex(/^wss?:\/\/./, 'a ws:// or wss:// URL')
    .optional(),
  siteKey: z.string().min(1).optional(),
  serverKeyFingerprint: z
    .string()
    .regex(KEY_FINGERPRINT_PATTERN, 'a key fingerprint, SHA256:<43 base64 characters>')
    .optional(),
  lan: z
    .strictObject({
      enabled: z.boolean(),
      port: z.number().int().min(0).max(65535).optional(),
      peers: z.array(z.string()).optional(),
      mdns: z.boolean().optional(),
      // An address to listen on: 'localhost' is not one (libp2p threw an
      // untyped ValidationError for it, a probe found).
      host: z
        .string()
        .refine((h) => isIP(h) !== 0, { message: 'an IP address, such as 127.0.0.1 or ::1' })
        .optional(),
    })
    .optional(),
  mode: z.enum(['live', 'periodic']).optional(),
  deltaIntervalMs: z.number().int().positive().optional(),
  retentionMs: z.number().int().positive().optional(),
  serverTransport: z
    .custom<Transport>(
      (v) => typeof v === 'object' && v !== null && typeof (v as Transport).connect === 'function',
      'serverTransport must be a Transport',
    )
    .optional(),
})

/** A device peer. */
export interface DevicePeer {
  readonly id: string
  readonly name: string
  readonly users: UsersApi
  readonly events: { query(q?: EventQuery): RosterEvent[] }
  /** The replicated state (for the network layer and tests). */
  readonly replica: Replica
  /** The link to the server, when `server` was given. */
  readonly serverLink: ServerLink | undefined
  /** Full and delta syncs, their status, `whenIdle` and `whenReady` (API.md). */
  readonly sync: DeviceSyncApi
  /** Records a user signing in on this device (counts as use for retention); USER_NOT_FOUND for an id it does not show. */
  signIn(userId: string): Promise<void>
  /**
   * Runs LAN sync on a connection to another device opened over any
   * transport (the simulator's); libp2p links are made by the LAN node.
   */
  attachLan(connection: Connection, peer?: string): void
  /** The LAN node's multiaddrs (with `/p2p/<peer id>`); empty when LAN sync is off. */
  readonly lanAddresses: string[]
  /**
   * The fingerprint of this device's signing key (`SHA256:…`): what the
   * administrator compares with the registry's before approving it.
   */
  readonly keyFingerprint: string
  /**
   * Imports an export file of this site's server (`server.exportUsers`):
   * its users show as the server's until the device's sync brings the
   * server's own entries (ARCHITECTURE.md, "Export / import"). Only while
   * the device is not connected to its server (`SYNC_RUNNING`); an expired
   * (`EXPORT_EXPIRED`), another site's (`AUTH_FAILED`), corrupt or truncated
   * (`MALFORMED_MESSAGE`) or oversized (`MESSAGE_TOO_LARGE`,
   * `EXPORT_TOO_LARGE`) file changes nothing. A device never admitted
   * takes only a file of the server key whose fingerprint it was given
   * (`serverKeyFingerprint`, here or in createDevice's options), and pins
   * that key (`AUTH_FAILED` otherwise). The file is encrypted: one exported
   * without a passphrase (the default) opens with this device's `siteKey`
   * (`EXPORT_SITE_KEY_REQUIRED` when the device has none); one exported
   * with a passphrase needs `passphrase` (`EXPORT_PASSPHRASE_INVALID` when
   * missing or wrong). `EXPORT_FORMAT_UNSUPPORTED` for a file of an older,
   * unencrypted format.
   */
  importUsers(
    file: Uint8Array,
    options?: { serverKeyFingerprint?: string; passphrase?: string },
  ): Promise<ImportResult>
  close(): Promise<void>
}

/** Opens a device peer in `dataDir` (API.md). */
export async function createDevice(input: DeviceOptions): Promise<DevicePeer> {
  const options = parseOptions(deviceOptionsSchema, input, 'createDevice') as DeviceOptions
  if (options.lan?.enabled === true && options.siteKey === undefined)
    throw new InvalidOptionsError(
      'createDevice: LAN sync needs a siteKey (it keys the private network)',
    )
  if (options.lan?.enabled === true) {
    await checkLanPeers(options.lan.peers ?? [])
    await checkLanListen(options.lan.host, options.lan.port)
  }
  const basics = await peerBasics(options)
  try {
    // Before anything writes: a server's data is never opened as a device's.
    await claimRole(basics.store, options.dataDir, { role: 'device', id: options.id })
  } catch (error) {
    // A store the caller passed stays theirs to close.
    if (options.store === undefined) await basics.store.close()
    throw error
  }
  const self = asWriterId(options.id)
  const overrides = new OverrideLog()
  const identity = await Identity.open(basics.store, basics.randomUint32)
  const replica = await Replica.open({
    writerId: self,
    ...basics,
    clientIds: identity,
    // Its changes merged per interval past a rate: one message per write,
    // back to back, ran into its server's limit (netLimits.deviceAnnounce*).
    announceIntervalMs: netLimits.deviceAnnounceIntervalMs,
    announceFreePerSecond: netLimits.deviceAnnounceFreePerSecond,
    hooks: {
      afterRemote: (users, ctx) => {
        const policies = ctx.policies()
        for (const id of users) overrides.record(ctx, self, id, ctx.replicaOf(id), policies)
      },
    },
    ...(options.eventsMax === undefined ? {} : { eventsMax: options.eventsMax }),
  })
  const log = await EnvelopeLog.open(basics.store)
  const signing = new DeviceSigning({
    identity,
    replica,
    writerId: self,
    clock: basics.clock,
    log,
    check: (update, writer, fromServer) =>
      checkUpdate(replica.doc, update, {
        // The server's envelopes may hold anything (it checked what it
        // merged); a device's, only its own part.
        mayWrite: (owner) => writer === SERVER_ID || owner === writer,
        schema: basics.schema,
        now: replica.stampTime.horizon(),
        ...(!fromServer && { deviceStampSkewMs: limits.lanStampSkewMsMax }),
      }),
  })
  const linkSigning = serverLinkSigning({
    identity,
    signing,
    expectedServerKey: options.serverKeyFingerprint,
    deviceId: options.id,
    room: 'roster',
    now: () => basics.clock.now(),
    // Periodic: what LAN neighbours send waits for the next delta, as the
    // device's own changes do (it went to the server at once).
    relays: options.mode !== 'periodic',
    offsetMs: replica.stampTime.offset,
    onTimeConfirmed: (offsetMs) => replica.stampTime.setOffset(offsetMs),
  })
  replica.stampTime.onStepBack((offsetMs) => linkSigning.clockSteppedBack(offsetMs))
  // The name given last is kept: a device opened again without one (a
  // routine `rostersync device --data ... --delta`) keeps its name in its
  // server's registry rather than showing its id there.
  const storedName = replica.record(...DEVICE_NAME_RECORD)
  const name = options.name ?? (typeof storedName === 'string' ? storedName : options.id)
  if (options.name !== undefined && options.name !== storedName)
    await replica.setRecord(...DEVICE_NAME_RECORD, options.name)
  const server = options.server
  const transport = options.serverTransport
  const mode = options.mode ?? 'live'
  const sync = await DeviceSync.start({
    replica,
    clock: basics.clock,
    random: basics.random,
    mode,
    deltaIntervalMs: options.deltaIntervalMs ?? DEFAULT_DELTA_INTERVAL_MS,
    retentionMs: options.retentionMs ?? DEFAULT_RETENTION_MS,
    clientKeys: () => {
      const ids = new Map<number, string>()
      for (const [client, key] of log.clientKeys()) ids.set(client, keyRevocationId(key))
      return ids
    },
    link:
      server === undefined
        ? undefined
        : (handlers) =>
            connectToServer({
              replica,
              url: server,
              deviceId: options.id,
              name,
              siteKey: options.siteKey,
              clock: basics.clock,
              random: basics.random,
              mode,
              joinParams: linkSigning.joinParams,
              onServerTime: linkSigning.onServerTime,
              onJoinReplayed: linkSigning.onJoinReplayed,
              signed: linkSigning.signed,
              onHello: linkSigning.onHello,
              ...(transport === undefined ? {} : { connect: (url) => transport.connect(url) }),
              ...handlers,
            }),
  })
  let lan: LanNode | undefined
  /** The last refusal or failure of a LAN link (status().lan). */
  let lanError: LanStatus['lastError']
  /** Which LAN refusals are logged (lan-link-refused, write-refused). */
  const lanLog = new LogLimiter(basics.clock)
  try {
    lan = await startDeviceLan(
      options,
      replica,
      basics,
      signing,
      identity.lanSeed,
      lanLog,
      (code, message, peer) => {
        lanError = { code, message, at: basics.clock.now() }
        // Logged once per code and peer (a peer redials with a backoff): a
        // probe found no trace of a refused LAN link anywhere; another
        // logged every message of a peer that varied its words.
        if (!lanLog.admit(`${code} ${peer}`)) return
        const said = `${message}${lanLog.notLogged()}`
        replica
          .writeMeta((ctx) => ctx.event({ type: 'lan-link-refused', code, message: said }))
          .catch(() => undefined) // best effort: status().lan has it too
      },
    )
  } catch (error) {
    sync.close()
    await replica.close()
    throw error
  }
  // On the system clock, a device with a server keeps the process alive
  // until it is closed, as a socket does: its timers are unref'd (a
  // pending delta sync or retention alone keeps nothing alive), so a
  // device whose server was out of reach let an app with nothing else
  // running exit, its retries and unsent writes dropped (a probe).
  const release = server !== undefined && input.clock === undefined ? holdProcess() : undefined
  const touch = (): void => sync.touch()
  return {
    id: options.id,
    name,
    users: usersApi(
      replica,
      basics.schema,
      deviceOps(basics.schema, self, overrides),
      pinHasher(options.siteKey),
      touch,
      () => {
        // SEMANTICS.md: offline mode only after one full sync. A device
        // with a server that never completed one takes writes only while
        // its server is connected (or first being reached, at start).
        const link = sync.serverLink?.state
        if (link === undefined || link === 'connected' || link === 'closed') return
        const status = sync.status()
        if (status.offlineReady) return
        // Connecting: taken at start, not once an attempt failed or a
        // connection was lost (a server that drops packets keeps each
        // attempt connecting for minutes: the gate must not open with every
        // retry; a retention wipe resets the sync states, not the link's
        // last failure).
        const failedBefore =
          status.serverToDevice.state === 'failed' || sync.serverLink?.reason !== undefined
        if (link === 'connecting' && !failedBefore) return
        throw new OfflineNotReadyError(link)
      },
    ),
    events: {
      query: (q) => {
        touch()
        return replica.events.query(parseEventQuery(q)).map(detached)
      },
    },
    replica,
    get serverLink() {
      return sync.serverLink
    },
    sync: {
      full: () => sync.full(),
      delta: () => sync.delta(),
      // A copy: the status objects are the sync's own.
      status: () =>
        detached({
          ...sync.status(),
          ...(lan && { lan: { peers: lan.peerCount(), ...(lanError && { lastError: lanError }) } }),
        }),
      whenIdle: () => sync.whenIdle(),
      whenReady: () => sync.whenReady(),
    },
    async signIn(userId) {
      touch()
      const id = basics.schema.parseUserId(userId)
      // As a patch of an unknown id is (it logged a sign-in of nobody).
      if (replica.shown.view(id) === undefined) throw new UserNotFoundError(id)
      await replica.writeMeta((ctx) =>
        ctx.event({ type: 'user-signed-in', userId: id, deviceId: options.id }),
      )
    },
    attachLan(connection, peer = connection.remote) {
      runLanLink({ replica, schema: basics.schema, signing, log: lanLog }, connection, peer)
    },
    lanAddresses: lan?.addresses ?? [],
    keyFingerprint: keyFingerprint(identity.publicKey),
    importUsers(file, importOptions) {
      touch()
      const given = importOptions?.serverKeyFingerprint
      if (given !== undefined && !KEY_FINGERPRINT_PATTERN.test(given))
        return Promise.reject(
          new InvalidOptionsError(
            `importUsers: serverKeyFingerprint ${JSON.stringify(given.slice(0, 60))} is not a key fingerprint (SHA256:<43 base64 characters>, as the server prints it)`,
          ),
        )
      return importUsers(
        {
          self,
          replica,
          schema: basics.schema,
          identity,
          siteKey: options.siteKey,
          serverKeyFingerprint: importOptions?.serverKeyFingerprint ?? options.serverKeyFingerprint,
          overrides,
          linkState: () => sync.serverLink?.state ?? 'none',
        },
        file,
        importOptions?.passphrase,
      )
    },
    async close() {
      release?.()
      await lan?.close()
      sync.close()
      await replica.close()
    },
  }
}

/** Starts LAN sync when the options enable it. */
async function startDeviceLan(
  options: DeviceOptions,
  replica: Replica,
  basics: PeerBasics,
  signing: DeviceSigning,
  identitySeed: Uint8Array,
  log: LogLimiter,
  onError: (code: string, message: string, peer: string) => void,
): Promise<LanNode | undefined> {
  const lan = options.lan
  if (lan?.enabled !== true || options.siteKey === undefined) return undefined
  return startLan({
    replica,
    schema: basics.schema,
    signing,
    deviceId: options.id,
    siteKey: options.siteKey,
    identitySeed,
    clock: basics.clock,
    random: basics.random,
    log,
    onError,
    ...(lan.port === undefined ? {} : { port: lan.port }),
    ...(lan.peers === undefined ? {} : { peers: lan.peers }),
    ...(lan.mdns === undefined ? {} : { mdns: lan.mdns }),
    ...(lan.host === undefined ? {} : { host: lan.host }),
  })
}
