/**
 * `createDevice`: a device peer (access-control terminal, printer, mustering
 * tablet). It writes into its own part of the roster; its deletes and its
 * device-specific fields stay on it.
 */
import { z } from 'zod'
import type { EventQuery, RosterEvent } from '../core/events.js'
import { asWriterId, SERVER_ID } from '../core/ids.js'
import { limits } from '../core/limits.js'
import { deviceOps, OverrideLog } from './device-ops.js'
import {
  commonOptionsShape,
  parseOptions,
  peerBasics,
  type CommonPeerOptions,
} from './peer-options.js'
import { hashRecordPin } from './pin.js'
import { Replica } from './replica.js'
import { usersApi, type UsersApi } from './user-ops.js'
import { connectToServer, type ServerLink } from './ws-client.js'

/** Options of {@link createDevice} (API.md). */
export interface DeviceOptions extends CommonPeerOptions {
  /** Stable device id, e.g. its serial number. */
  readonly id: string
  readonly name?: string
  /** The server's WebSocket URL (`server.url`); omitted: no server link. */
  readonly server?: string
  readonly siteKey?: string
  readonly lan?: {
    readonly enabled: boolean
    readonly port?: number
    readonly peers?: readonly string[]
  }
  readonly mode?: 'live' | 'periodic'
  readonly deltaIntervalMs?: number
  readonly retentionMs?: number
}

const deviceOptionsSchema = z.strictObject({
  ...commonOptionsShape,
  id: z
    .string()
    .min(1)
    .max(limits.writerIdCharsMax)
    .regex(/^[A-Za-z0-9][A-Za-z0-9._:-]*$/, 'letters, digits and . _ : - only')
    .refine((id) => id !== SERVER_ID, 'a device cannot be called "server"'),
  name: z.string().max(limits.textCharsMax).optional(),
  server: z
    .string()
    .regex(/^wss?:\/\/./, 'a ws:// or wss:// URL')
    .optional(),
  siteKey: z.string().min(1).optional(),
  lan: z
    .strictObject({
      enabled: z.boolean(),
      port: z.number().int().min(0).max(65535).optional(),
      peers: z.array(z.string()).optional(),
    })
    .optional(),
  mode: z.enum(['live', 'periodic']).optional(),
  deltaIntervalMs: z.number().int().positive().optional(),
  retentionMs: z.number().int().positive().optional(),
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
  close(): Promise<void>
}

/** Opens a device peer in `dataDir` (API.md). */
export async function createDevice(input: DeviceOptions): Promise<DevicePeer> {
  const options = parseOptions(deviceOptionsSchema, input, 'createDevice') as DeviceOptions
  const basics = await peerBasics(options)
  const self = asWriterId(options.id)
  const overrides = new OverrideLog()
  const replica = await Replica.open({
    writerId: self,
    ...basics,
    hooks: {
      afterRemote: (users, ctx) => {
        const policies = ctx.policies()
        for (const id of users) overrides.record(ctx, self, id, ctx.replicaOf(id), policies)
      },
    },
    ...(options.eventsMax === undefined ? {} : { eventsMax: options.eventsMax }),
  })
  const name = options.name ?? options.id
  const serverLink =
    options.server === undefined
      ? undefined
      : connectToServer({
          replica,
          url: options.server,
          deviceId: options.id,
          name,
          siteKey: options.siteKey,
          clock: basics.clock,
          random: () => basics.randomUint32() / 2 ** 32,
        })
  return {
    id: options.id,
    name,
    users: usersApi(
      replica,
      basics.schema,
      deviceOps(basics.schema, self, overrides),
      hashRecordPin,
    ),
    events: { query: (q) => replica.events.query(q) },
    replica,
    serverLink,
    async close() {
      serverLink?.close()
      await replica.close()
    },
  }
}
