/**
 * `createServer`: the authoritative peer of a site. It owns the server's part
 * of the roster, adopts device fills (rule 2) and sets the field policies.
 */
import { readdir, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { z } from 'zod'
import { FIELD_POLICIES, type FieldPolicy } from '../core/entries.js'
import { parseEventQuery, type EventQuery, type RosterEvent } from '../core/events.js'
import {
  ExportSiteKeyRequiredError,
  InvalidOptionsError,
  PeerRevokedError,
  RostersyncError,
} from '../core/errors.js'
import { detached } from '../core/detach.js'
import { keyFingerprint, keyRevocationId } from '../core/signing.js'
import { asWriterId, SERVER_ID } from '../core/ids.js'
import {
  commonOptionsShape,
  parseOptions,
  peerBasics,
  type CommonPeerOptions,
} from '../peers/peer-options.js'
import { pinHasher } from '../peers/pin.js'
import { Replica } from '../peers/replica.js'
import { usersApi, type UsersApi } from '../peers/user-ops.js'
import { CloseCode } from '../core/protocol.js'
import { checkUpdate } from '../core/authorize.js'
import { Identity } from '../peers/identity.js'
import { ServerSigning } from '../peers/server-signing.js'
import { DeviceKeys } from './device-keys.js'
import { DeviceRegistry, type DeviceRecord } from './device-registry.js'
import { adoptFills, adoptsAny, applyPolicies, serverOps } from './server-ops.js'
import { createSyncEndpoint, startSyncServer, type SyncServer } from './sync-server.js'
import type { Connection } from '../core/transport.js'
import { httpApi } from './http-api.js'
import { Generations, type CompactionResult } from './generations.js'
import { MoveGate } from './generation-moves.js'
import type { Generation } from '../core/generation-statement.js'
import { AdminConsole } from './admin-routes.js'
import { prepareExport, type ExportRequest, type PreparedExport } from './export-users.js'
import { limits, netLimits } from '../core/limits.js'
import { siteOf } from '../peers/identity.js'
import { claimRole } from '../peers/data-role.js'
import { secretFor, settleSiteKey } from './site-access.js'
import { hostName } from './admin-sessions.js'
import { availableParallelism } from 'node:os'
import { createVerifyPool } from '../peers/verify-pool.js'
import type { IncomingMessage, ServerResponse } from 'node:http'

/** Options of {@link createServer} (API.md). */
export interface ServerOptions extends CommonPeerOptions {
  readonly dataDir?: string
  /** Interface to listen on; loopback by default. */
  readonly host?: string
  /** Port to listen on; 0 picks a free one. */
  readonly port?: number
  /**
   * Secret shared by the site; devices need it to join. Default: read from
   * (or created in) `<dataDir>/site-key` (mode 0600), random when there is
   * no dataDir; `server.siteKey` has it. Never logged.
   */
  readonly siteKey?: string
  /**
   * An open site: any device with any key (or none) joins. Must be asked
   * for explicitly, and is announced with a process warning at start-up.
   * Cannot be combined with `siteKey`.
   */
  readonly open?: boolean
  /**
   * Approval mode: a device id never seen before is registered as pending
   * and refused (`PEER_PENDING`, close 4423; it retries with backoff) until
   * `server.devices.approve(id)`. The site key alone then no longer lets a
   * revoked device back in under a new id.
   */
  readonly approveDevices?: boolean
  /**
   * Host names the HTTP API and admin page answer on, besides IP
   * addresses, `localhost` and `*.localhost` (`/api/health` answers on
   * any). A web page elsewhere can point its own name at this server (DNS
   * rebinding); a request under a name not listed is refused
   * `CSRF_REFUSED`.
   */
  readonly adminHosts?: readonly string[]
  /**
   * Bearer token of the HTTP API. Default: read from (or created in)
   * `<dataDir>/admin-token`, so local tools can use it; random when there is no dataDir.
   */
  readonly adminToken?: string
  /**
   * Field name → policy; fields not named are `shared`. Given, it is the
   * whole table whenever it differs from the one given at the last start
   * (the same table again changes nothing: a policy `setFieldPolicies` set
   * since stays). Not given, the policies stored are kept.
   */
  readonly fieldPolicies?: Readonly<Record<string, FieldPolicy>>
  /** The y-websocket room name devices join; `roster` by default. */
  readonly room?: string
  /** Set false to open the roster without listening (offline tools). */
  readonly listen?: boolean
  /**
   * Changes are forwarded to connected devices at most once per this many
   * ms, merged (10 by default; 0 forwards each batch at once); with many
   * devices connected, at most once per 0.2 ms x devices (200 devices: 40
   * ms). Under heavy edit traffic this bounds the messages the server sends
   * and keeps its answers fast; a change after a quiet spell goes out at
   * once.
   */
  readonly fanOutIntervalMs?: number
  /**
   * Device updates arriving back to back are applied and stored together,
   * one batch at most every this many ms of wall time (0 applies each as
   * soon as the one before is durable). One edit after a quiet spell is
   * applied at once. Under heavy edit traffic (hundreds of devices) this
   * turns one write per edit into one per window, which keeps the server's
   * answers fast; it delays an acknowledgement by this much at most.
   * Default: 5, or 0 when a `clock` is passed (a test or simulation that
   * steps its own time must not wait on the wall clock).
   */
  readonly batchWindowMs?: number
  /**
   * Largest message of an answer to a step 1, in bytes
   * (`netLimits.answerChunkBytesMax`, 16 MiB, by default): a larger answer
   * goes out in parts (PROTOCOL.md, "Answers in chunks").
   */
  readonly answerChunkBytesMax?: number
  /** Most users one export holds (`limits.usersPerExportMax`, 500, by default). */
  readonly exportUsersMax?: number
  /** Most groups one export may name (`limits.groupsPerExportMax`, 50, by default). */
  readonly exportGroupsMax?: number
  /**
   * log2 of scrypt's cost N for export keys, from the site key or a
   * passphrase (`limits.exportKdfLogN`,
   * 17, by default; from `exportKdfLogNMin`, 15, to `exportKdfLogNMax`, 20).
   */
  readonly exportKdfLogN?: number
  /**
   * Worker threads that verify device updates' signatures, off the main
   * thread (peers/verify-pool.ts); 0 verifies on the main thread. Default:
   * one per core but one, at least 1 and at most 4, when listening; 0 with
   * `listen: false` (a simulation replays from its seed, and threads would
   * make its order depend on timing).
   */
  readonly verifyWorkers?: number
}

const serverOptionsSchema = z.strictObject({
  ...commonOptionsShape,
  host: z.string().min(1).optional(),
  port: z.number().int().min(0).max(65535).optional(),
  siteKey: z.string().min(1).optional(),
  open: z.boolean().optional(),
  approveDevices: z.boolean().optional(),
  adminToken: z.string().min(16).optional(),
  adminHosts: z
    .array(
      z.string().regex(/^[A-Za-z0-9.-]{1,253}$/, 'a host name (letters, digits, dots, dashes)'),
    )
    .max(64)
    .optional(),
  room: z.string().min(1).max(128).optional(),
  listen: z.boolean().optional(),
  fieldPolicies: z
    .record(z.string(), z.enum(FIELD_POLICIES as [FieldPolicy, ...FieldPolicy[]]))
    .optional(),
  fanOutIntervalMs: z.number().min(0).max(10_000).optional(),
  batchWindowMs: z.number().min(0).max(1_000).optional(),
  // At most the default: a larger part would come near messageBytesMax.
  answerChunkBytesMax: z
    .number()
    .int()
    .min(2 * netLimits.answerChunkOverheadBytesMax)
    .max(netLimits.answerChunkBytesMax)
    .optional(),
  exportUsersMax: z.number().int().min(1).max(limits.usersPerExportHardMax).optional(),
  exportGroupsMax: z.number().int().min(1).max(limits.usersPerExportHardMax).optional(),
  exportKdfLogN: z
    .number()
    .int()
    .min(limits.exportKdfLogNMin)
    .max(limits.exportKdfLogNMax)
    .optional(),
  verifyWorkers: z.number().int().min(0).max(64).optional(),
})

/** Default of ServerOptions.fanOutIntervalMs. */
export const FAN_OUT_INTERVAL_MS = 10
/**
 * The fan-out interval grows by this per connected device: at most 5,000
 * update messages a second in all (200 devices: one every 40 ms each).
 */
export const FAN_OUT_MS_PER_DEVICE = 0.2
/** Default of ServerOptions.batchWindowMs. */
export const BATCH_WINDOW_MS = 5

/** The server peer. */
export interface ServerPeer {
  readonly id: typeof SERVER_ID
  readonly users: UsersApi
  readonly events: { query(q?: EventQuery): RosterEvent[] }
  /** The replicated state (for the network layer and tests). */
  readonly replica: Replica
  /** `ws://host:port` once listening (empty with `listen: false`). */
  readonly url: string
  /** `http://host:port` once listening (empty with `listen: false`). */
  readonly http: string
  /**
   * Changes field policies while running (fields not named keep theirs);
   * resolves with the fields that changed, once durable. Rejects with
   * `INVALID_OPTIONS` on an unknown field or policy.
   */
  setFieldPolicies(policies: Readonly<Record<string, FieldPolicy>>): Promise<string[]>
  readonly devices: {
    /** Registered devices, by id; `nameContains` filters by partial name. */
    list(filter?: { nameContains?: string }): DeviceRecord[]
    /** Revokes a device: its connections close and it is refused from then on. */
    revoke(id: string): Promise<boolean>
    /**
     * Approves a pending device (approval mode): it syncs from its next
     * connection on. False if unknown; rejects `PEER_REVOKED` for a revoked one.
     */
    approve(id: string): Promise<boolean>
    /**
     * Forgets the key bound to a device and puts it back to waiting for
     * approval (a replaced or re-imaged terminal): its connections close,
     * the next device to join under the id with a valid proof has its key
     * bound while it waits, and the administrator approves it after
     * comparing `keyFingerprint` with the one the terminal shows. False if
     * unknown; rejects `PEER_REVOKED` for a revoked one.
     */
    resetKey(id: string): Promise<boolean>
    /**
     * Forgets a device (a terminal taken out of service, or an id made up
     * by a key holder): its record goes, it counts no longer toward
     * `limits.devicesRegisteredMax`, its key is unbound and its connection
     * closed; joining again under the id, it is a new device. False if
     * unknown; rejects `PEER_REVOKED` for a revoked one (its record is what
     * keeps it refused).
     */
    forget(id: string): Promise<boolean>
  }
  /** The site key devices join with; undefined for an open site. */
  readonly siteKey: string | undefined
  /** Where the site key is kept (`<dataDir>/site-key`), when the server made or read it there. */
  readonly siteKeyFile: string | undefined
  /**
   * The fingerprint of the server's signing key (`SHA256:…`): what a device
   * provisioned before its first admission is given
   * (`serverKeyFingerprint`), and what it needs to import an export file.
   */
  readonly keyFingerprint: string
  /**
   * Takes a connection opened over any transport (the simulator's, an
   * in-memory pair) as if it had joined the WebSocket endpoint at `url`
   * (`/roster?device=ID&name=N&key=K`).
   */
  accept(connection: Connection, url: string): void
  /** Bearer token of the HTTP API at `http`. */
  readonly adminToken: string
  /**
   * Prepares an export of users by id and/or by group (SEMANTICS.md,
   * "Export / import"): a file signed by this server for its site, valid
   * for 15 minutes (`expiresAt`, this server's clock), for
   * `device.importUsers`. Encrypted under the site key unless a
   * `passphrase` is given or `generatePassphrase` asked for (on an open
   * site without a passphrase: not confidential; `keySource` says which).
   * Rejects `INVALID_OPTIONS` (nothing named, bad ids), `GROUP_NOT_FOUND`
   * (a group no live user is in), `USER_NOT_FOUND`
   * (a named user the server does not hold), `EXPORT_TOO_LARGE` (past
   * `exportUsersMax` / `exportGroupsMax`), `EXPORT_PASSPHRASE_INVALID`.
   */
  exportUsers(request: ExportRequest): Promise<PreparedExport>
  /** This server's public key, base64: the site every signature and export names. */
  readonly site: string
  /**
   * Starts a new generation of the site's document (issue 13, history
   * compaction): the live state only, no history, no retired clientIDs;
   * stored in one atomic batch with the generation record and the event
   * `history-compacted`. Every device link is closed with 4412
   * `GENERATION_CHANGED`; each device comes back after a delay of its own
   * and moves with one full sync, keeping its delete marks, its
   * device-specific values and its unsent edits. Also started by itself
   * past `limits.generationClientIdsMax` / `generationHistoryRatioMax`
   * (when listening), by `rostersync compact` and the admin page.
   */
  compactHistory(): Promise<CompactionResult>
  /** The generation the site's document is on (`n` 0 before the first compaction). */
  readonly generation: Generation
  /** Stops, makes everything durable, closes the store. */
  close(): Promise<void>
}

/** Opens the server peer in `dataDir` (API.md). */
export async function createServer(input: ServerOptions): Promise<ServerPeer> {
  const options = parseOptions(serverOptionsSchema, input, 'createServer') as ServerOptions
  if (options.open === true && options.siteKey !== undefined)
    throw new InvalidOptionsError('createServer: open and siteKey exclude each other')
  // A start that fails to listen leaves nothing behind in a data directory
  // it made, or found empty (a port in use had left a LevelDB, a site key
  // and an admin token: "changes nothing").
  const madeDir = await dirMadeHere(options.dataDir)
  const basics = await peerBasics(options)
  try {
    // Before anything writes: a device's data is never opened as a server's.
    await claimRole(basics.store, options.dataDir, { role: 'server' })
  } catch (error) {
    // A store the caller passed stays theirs to close.
    if (options.store === undefined) await basics.store.close()
    throw error
  }
  const identity = await Identity.open(basics.store, basics.randomUint32)
  const replica = await Replica.open({
    writerId: SERVER_ID,
    ...basics,
    clientIds: identity,
    // A data directory restored from a backup writes under ids no device
    // holds (PROTOCOL.md, "A restored server"): one clientID per start.
    freshClientIdEachOpen: true,
    hooks: {
      afterRemote: (users, ctx) => adoptFills(users, ctx),
      writesAfterRemote: (users, ctx) => adoptsAny(users, ctx),
    },
    ...(options.eventsMax === undefined ? {} : { eventsMax: options.eventsMax }),
    ...(options.answerChunkBytesMax === undefined
      ? {}
      : { answerChunkBytesMax: options.answerChunkBytesMax }),
    announceIntervalMs: options.fanOutIntervalMs ?? FAN_OUT_INTERVAL_MS,
    announceMsPerListener: options.fanOutIntervalMs === 0 ? 0 : FAN_OUT_MS_PER_DEVICE,
    // Wall time: with an injected clock (tests, simulations, which step
    // time themselves) it is off unless asked for.
    remoteBatchWindowMs:
      options.batchWindowMs ?? (options.clock === undefined ? BATCH_WINDOW_MS : 0),
  })
  for (const field of Object.keys(options.fieldPolicies ?? {})) {
    if (!basics.schema.hasField(field)) {
      await replica.close()
      throw new InvalidOptionsError(`fieldPolicies: unknown field ${field}`)
    }
  }
  // The whole table, when it differs from the one given at the last start:
  // a field it does not name is shared, though the store holds another
  // policy of it (a probe: started again with `{}`, a device-specific field
  // stayed device-specific). The same table again changes nothing, so a
  // policy set since (setFieldPolicies, the admin page) stays (a review:
  // each restart would have undone it, dropping devices' values, rule 5).
  const given = options.fieldPolicies
  const table = given === undefined ? undefined : sortedTable(given)
  if (table !== undefined && table !== replica.record(...GIVEN_POLICIES_RECORD)) {
    await replica.write((ctx) => {
      const wanted: Record<string, FieldPolicy> = {}
      for (const [field, { p }] of ctx.policies()) if (p !== 'shared') wanted[field] = 'shared'
      ctx.setRecord(...GIVEN_POLICIES_RECORD, table)
      return applyPolicies({ ...wanted, ...given }, ctx)
    })
  }
  const ops = serverOps(basics.schema)
  const registry = new DeviceRegistry(basics.clock, replica)
  const keys = new DeviceKeys(replica)
  /** The fingerprint of the key bound to a device (its registry row's `keyFingerprint`). */
  const keyFingerprintOf = (id: string): string | undefined => {
    const key = keys.get(id)
    return key === undefined ? undefined : keyFingerprint(key)
  }
  // Revocations from before they were published (or whose write failed).
  await publishRevocations(replica, registry, keys)
  // A token file that cannot be used refuses a server that listens (the
  // store let go); offline (tools on a stopped server's directory) nothing
  // reads it, and a random one stands in (a review: export and compact
  // were refused for a damaged token, and the store stayed locked).
  const adminToken =
    options.adminToken ??
    (await adminTokenFor(options.dataDir).catch(async (error: unknown) => {
      if (options.listen === false) return secretFor(undefined, 'admin-token')
      await registry.close()
      await replica.close()
      throw error
    }))
  // Secure by default: no site key given means one kept beside the
  // database, never an open site (issue 11).
  const site = await settleSiteKey(options, replica).catch(async (error: unknown) => {
    // Refused (a key offline that is not the server's): the store is let go.
    await registry.close()
    await replica.close()
    throw error
  })
  const { siteKey, siteKeyFile, known: siteKeyKnown } = site
  if (options.open === true && options.listen !== false) {
    process.emitWarning(
      'this rostersync site is OPEN: any device with any key joins (open: true). Pass siteKey, or leave both out for a generated one.',
      { code: 'ROSTERSYNC_OPEN_SITE' },
    )
  }
  const verifyWorkers =
    options.verifyWorkers ??
    (options.listen === false ? 0 : Math.min(4, Math.max(1, availableParallelism() - 1)))
  const pool = verifyWorkers > 0 ? createVerifyPool(verifyWorkers) : undefined
  // The API is bound once the peer object exists (it serves its methods).
  let api: (req: IncomingMessage, res: ServerResponse) => void = (_req, res) => {
    res.writeHead(503).end()
  }
  // The generation statement every hello carries (bound below, once the
  // generations exist: they close the endpoint's links).
  let statementOf: () => Uint8Array | undefined = () => undefined
  let generationIdOf = (): string => ''
  let gateOf = (connection: Connection, _deviceId: string): Connection | undefined => connection
  const endpointOptions = {
    replica,
    generation: () => statementOf(),
    // Devices fetching a new generation at once, capped (issue 13): every
    // admitted device link goes through the gate, whatever the transport.
    gate: (connection: Connection, deviceId: string) => gateOf(connection, deviceId),
    schema: basics.schema,
    registry,
    siteKey,
    room: options.room ?? 'roster',
    signing: {
      identity,
      keys,
      clock: basics.clock,
      signer: new ServerSigning({
        identity,
        replica,
        // A revoked device's envelopes are refused, whoever relays them,
        // and so are those of its key under another id (a review: a key
        // joined as two ids wrote on through the one not revoked).
        deviceKey: (id) => {
          const key = registry.isRevoked(id) ? undefined : keys.get(id)
          return key === undefined || keys.keyRefused(id, key) ? undefined : key
        },
        check: (update, writer) =>
          checkUpdate(replica.doc, update, {
            mayWrite: (owner) => owner === writer,
            schema: basics.schema,
            now: replica.stampTime.horizon(),
            time: replica.stampTime.now(),
          }),
        ...(pool === undefined ? {} : { pool }),
        generationId: () => generationIdOf(),
      }),
    },
    approveDevices: options.approveDevices === true,
  }
  const endpoint = createSyncEndpoint(endpointOptions)
  const generations = new Generations({
    replica,
    identity,
    clock: basics.clock,
    holdsProcess: options.clock === undefined,
    randomUint32: basics.randomUint32,
    closeLinks: (reason) => {
      const closed = endpoint.connectedDevices().length
      endpoint.closeAll(CloseCode.generationChanged, reason)
      return closed
    },
    // Best effort, whatever the store: a reclaim that throws or rejects
    // changes nothing stored, and the switch is durable already.
    reclaim: () => {
      try {
        basics.store.reclaim?.().catch(() => undefined)
      } catch {
        // As above.
      }
    },
    mostClientsOfOneWriter: () =>
      endpointOptions.signing.signer.writerClients.mostHeld(replica.doc),
  })
  statementOf = () => generations.statement()
  generationIdOf = () => generations.current().id
  // What the server lets go of a forgotten device: the endpoint's state of
  // it, and its key binding (not revoked: the same terminal may come back).
  const letGo = (id: string): Promise<void> => {
    endpoint.forget(id)
    return keys.unbind(id, false)
  }
  // A device forgotten to make room.
  registry.onForgotten = (id) => void letGo(id).catch(() => undefined)
  // A device that wrote something is not forgotten to make room (a full registry).
  endpointOptions.signing.signer.writerClients.onWriter = (writer) => registry.wrote(writer)
  const moves = new MoveGate({
    clock: basics.clock,
    generation: () => generations.started(),
    firstSeen: (id) => registry.get(id)?.firstSeen,
  })
  gateOf = (connection, deviceId) => moves.admit(connection, deviceId)
  let sync: SyncServer | undefined
  if (options.listen !== false) {
    try {
      sync = await startSyncServer(
        {
          ...endpointOptions,
          host: options.host ?? '127.0.0.1',
          port: options.port ?? 0,
          onHttp: (req, res) => api(req, res),
        },
        endpoint,
      )
    } catch (error) {
      await pool?.close()
      await replica.close()
      await madeDir.undo().catch(() => undefined)
      throw new InvalidOptionsError(
        `cannot listen on ${options.host ?? '127.0.0.1'}:${options.port ?? 0}: ${(error as Error).message}`,
      )
    }
    // Listening: how devices join is recorded for offline tools (a start
    // that failed above recorded nothing).
    await site.record()
  }
  const peer: ServerPeer = {
    id: SERVER_ID,
    users: usersApi(replica, basics.schema, ops, pinHasher(siteKey)),
    events: { query: (q) => replica.events.query(parseEventQuery(q)).map(detached) },
    replica,
    url: sync?.url ?? '',
    http: sync?.http ?? '',
    adminToken,
    siteKey,
    siteKeyFile,
    keyFingerprint: keyFingerprint(identity.publicKey),
    devices: {
      list: (filter) =>
        registry.list(deviceFilter(filter)).map((device) => {
          const fingerprint = keyFingerprintOf(device.id)
          // Copies: a caller that changes a row changes nothing here.
          return fingerprint === undefined
            ? detached(device)
            : { ...detached(device), keyFingerprint: fingerprint }
        }),
      async revoke(id) {
        if (!(await registry.revoke(id))) return false
        endpoint.disconnect(id, CloseCode.revoked, 'PEER_REVOKED')
        // The same key's links under other ids go too: it is refused now.
        for (const other of keys.sharingKey(id))
          endpoint.disconnect(other, CloseCode.revoked, 'PEER_REVOKED: its key was revoked')
        await publishRevocations(replica, registry, keys)
        return true
      },
      async approve(id) {
        // Reset and not joined since: approved now, the id would go to the
        // first proof that came, any site-key holder's (a probe).
        if (keys.get(id) === undefined && keys.awaitsKey(id) && !registry.isRevoked(id))
          throw new RostersyncError(
            'PEER_PENDING',
            `device ${JSON.stringify(id.slice(0, 64))} has no key since its key was reset: approve it once the terminal has joined and shown the key fingerprint you compared`,
          )
        if (!(await registry.approve(id))) return false
        // The key the administrator approved was one a reset of this id had
        // revoked (the terminal had not lost it): its revocation goes, or
        // its LAN peers refused it for good while the server took it (a
        // probe). Another id's reset stays (the key's old certificates
        // name that id).
        const key = keys.get(id)
        const revocation = key === undefined ? undefined : keyRevocationId(key)
        if (
          revocation !== undefined &&
          replica.isRevoked(revocation) &&
          keys.revokedByReset(id, revocation)
        )
          await replica.write((ctx) => ctx.setRevoked(asWriterId(revocation), undefined))
        return true
      },
      async resetKey(id) {
        if (registry.get(id) === undefined) return false
        if (registry.isRevoked(id)) throw new PeerRevokedError(id)
        // Pending first: between the two, an approved id without a key
        // would bind the first proof that came (and get a certificate).
        await registry.hold(id)
        await keys.unbind(id)
        await replica.writeMeta((ctx) => ctx.event({ type: 'device-key-reset', deviceId: id }))
        endpoint.disconnect(id, CloseCode.pending, 'PEER_PENDING: key reset by the administrator')
        return true
      },
      async forget(id) {
        if (registry.get(id) === undefined) return false
        if (registry.isRevoked(id)) throw new PeerRevokedError(id)
        // Forgotten before its link closes: a device that rejoins at once is new.
        const forgotten = registry.forget(id)
        endpoint.disconnect(id, CloseCode.refused, 'PEER_UNKNOWN: forgotten by the administrator')
        await letGo(id)
        return forgotten
      },
    },
    accept: (connection, url) => endpoint.accept(connection, url),
    site: siteOf(identity.publicKey),
    compactHistory: () => generations.compactHistory(),
    get generation() {
      return generations.current()
    },
    async exportUsers(request) {
      if (!siteKeyKnown && request.passphrase === undefined && request.generatePassphrase !== true)
        throw new ExportSiteKeyRequiredError(
          'this server was given its site key when it started (it is not kept in its data directory): give the same key (createServer({ siteKey }); --site-key or ROSTERSYNC_SITE_KEY), or export with a passphrase',
        )
      // Awaits what is queued first, so that an export made right after a
      // write holds it.
      await replica.drain()
      const prepared = await prepareExport(
        {
          ...(options.exportKdfLogN === undefined ? {} : { kdfLogN: options.exportKdfLogN }),
          replica,
          schema: basics.schema,
          clock: basics.clock,
          key: identity.key,
          siteKey,
          caps: {
            usersMax: options.exportUsersMax ?? limits.usersPerExportMax,
            groupsMax: options.exportGroupsMax ?? limits.groupsPerExportMax,
          },
        },
        request,
      )
      // Who took which users off the server is worth an entry in the log.
      await replica.writeMeta((ctx) =>
        ctx.event({
          type: 'users-exported',
          message: `${prepared.users} users, valid until ${new Date(prepared.expiresAt).toISOString()}`,
        }),
      )
      return prepared
    },
    async setFieldPolicies(policies) {
      for (const [field, policy] of Object.entries(policies)) {
        if (!basics.schema.hasField(field))
          throw new InvalidOptionsError(`setFieldPolicies: unknown field ${field}`)
        if (!FIELD_POLICIES.includes(policy))
          throw new InvalidOptionsError(`setFieldPolicies: unknown policy ${String(policy)}`)
      }
      return replica.write((ctx) => applyPolicies(policies, ctx))
    },
    async close() {
      await generations.stop()
      admin.close()
      await sync?.close()
      endpoint.closeAll(CloseCode.serverClosing, 'server closing')
      await pool?.close()
      await registry.close()
      await replica.close()
    },
  }
  const admin = new AdminConsole({
    adminToken,
    hosts: new Set((options.adminHosts ?? []).map(hostName)),
    now: () => basics.clock.now(),
    replica,
    schema: basics.schema,
    registry,
    keyFingerprintOf,
    serverKeyFingerprint: peer.keyFingerprint,
    events: peer.events,
    setFieldPolicies: (policies) => peer.setFieldPolicies(policies),
  })
  api = httpApi(peer, adminToken, admin)
  // Automatic generations, checked on a timer off the hot path; a server
  // opened without listening (offline tools, the simulator) compacts only
  // when asked.
  if (options.listen !== false) generations.start()
  return peer
}

/**
 * The admin token kept beside the database (mode 0600), so that tools on the
 * same machine (the CLI) can use the API; created on first start.
 */
async function adminTokenFor(dataDir: string | undefined): Promise<string> {
  return secretFor(dataDir, 'admin-token')
}

/**
 * A secret kept in `<dataDir>/<name>` (mode 0600), created on first start
 * and reused after; random and kept in memory only without a dataDir.
 */
/**
 * Writes every revoked device of the registry into the document's
 * revocations (REVOCATIONS_ROOT in core/entries.ts) that is not there yet:
 * devices learn it with the next sync or LAN relay, and from then on
 * refuse the revoked device's envelopes and leave its part out of views.
 */
async function publishRevocations(
  replica: Replica,
  registry: DeviceRegistry,
  keys: DeviceKeys,
): Promise<void> {
  // Each revoked device's key too: under a new id it is refused as well
  // (at the server, DeviceKeys.keyRefused; on the LAN, its certificates).
  const missing = registry
    .list()
    .filter((device) => device.revoked)
    .flatMap((device) => {
      const key = keys.get(device.id)
      return [device.id, ...(key === undefined ? [] : [keyRevocationId(key)])]
    })
    .filter((id) => !replica.isRevoked(id))
    .map((id) => asWriterId(id))
  if (missing.length > 0)
    await replica.write((ctx) => {
      const t = ctx.stamp()
      for (const id of missing) ctx.setRevoked(id, { t })
    })
  // And for good: no reset of another id exempts such a key any more
  // (DeviceKeys.revokedWithDevice); at start-up too, after a crash between
  // the revoke and this.
  for (const device of registry.list()) if (device.revoked) await keys.revokedWithDevice(device.id)
}

/** `devices.list`'s filter, checked: `INVALID_OPTIONS` for anything but `{ nameContains?: string }`. */
function deviceFilter(filter: unknown): { nameContains?: string } {
  if (filter === undefined) return {}
  const parsed = z.strictObject({ nameContains: z.string().optional() }).safeParse(filter)
  if (parsed.success)
    return parsed.data.nameContains === undefined ? {} : { nameContains: parsed.data.nameContains }
  const issue = parsed.error.issues[0]
  const where = issue === undefined || issue.path.length === 0 ? 'filter' : issue.path.join('.')
  throw new InvalidOptionsError(
    `devices.list: the filter is { nameContains?: string }; ${where}: ${issue?.message ?? 'invalid'}`,
  )
}

/** Where the server keeps the `fieldPolicies` it was last started with (sorted JSON). */
const GIVEN_POLICIES_RECORD = ['site', 'field-policies-given'] as const

/** `table` as sorted JSON: the same policies compare equal whatever their order. */
function sortedTable(table: Readonly<Record<string, FieldPolicy>>): string {
  return JSON.stringify(Object.entries(table).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
}

/**
 * Whether `dataDir` is absent or empty now; `undo` then takes away what was
 * made in it since (the directory too when it was absent).
 */
async function dirMadeHere(dataDir: string | undefined): Promise<{ undo(): Promise<void> }> {
  const nothing = { undo: async () => undefined }
  if (dataDir === undefined) return nothing
  const entries = await readdir(dataDir).catch((error: NodeJS.ErrnoException) =>
    error.code === 'ENOENT' ? undefined : ['(unreadable)'],
  )
  if (entries === undefined) return { undo: () => rm(dataDir, { recursive: true, force: true }) }
  if (entries.length > 0) return nothing
  return {
    undo: async () => {
      for (const entry of await readdir(dataDir).catch(() => []))
        await rm(join(dataDir, entry), { recursive: true, force: true })
    },
  }
}
