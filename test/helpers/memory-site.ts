/**
 * A server and devices in one process over in-memory links, each peer on
 * its own injected clock (a ManualClock, or any Clock), with stores that
 * survive a restart of their peer: for tests of events, retention and
 * clocks that need neither sockets nor disks.
 */
import type { Clock } from '../../core/clock.js'
import { SyncError } from '../../core/errors.js'
import type { Connection, Transport } from '../../core/transport.js'
import { createDevice, type DeviceOptions, type DevicePeer } from '../../peers/create-device.js'
import { createServer, type ServerPeer } from '../../server-peer/create-server.js'
import { FaultyStore } from '../../storage/faulty-store.js'
import { memoryStore } from '../../storage/level-store.js'
import { memoryPair } from '../../transports/memory-transport.js'
import { KeptOpenStore } from './forwarding-store.js'

export const SITE_KEY = 'memory-site-key'

/** One server and its in-memory network, which can be cut. */
export interface MemorySite {
  readonly server: ServerPeer
  /** The server's store; `failAll(true)` makes every write fail. */
  readonly serverStore: FaultyStore
  readonly transport: Transport
  /** Refuse new connections and drop the open ones. */
  down(): void
  up(): void
  /**
   * Opens device `id` on `clock`. Its store is kept per id: opening the id
   * again (after `close()`) restarts the same device on the same data.
   */
  device(id: string, clock: Clock, extra?: Partial<DeviceOptions>): Promise<DevicePeer>
  /** Closes every peer still open. */
  close(): Promise<void>
}

/** Starts a server on `clock` (options as createServer's). */
export async function memorySite(
  clock: Clock,
  serverOptions: Partial<Parameters<typeof createServer>[0]> = {},
): Promise<MemorySite> {
  const serverStore = new FaultyStore(memoryStore())
  const server = await createServer({
    store: serverStore,
    clock,
    listen: false,
    siteKey: SITE_KEY,
    ...serverOptions,
  })
  const open = new Set<Connection>()
  const stores = new Map<string, KeptOpenStore>()
  const peers = new Set<DevicePeer>()
  let isDown = false
  const transport: Transport = {
    connect: async (url) => {
      if (isDown) throw new SyncError('SYNC_FAILED', 'connection refused (server down)')
      const [mine, theirs] = memoryPair('device', 'server')
      server.accept(theirs, url)
      open.add(mine)
      return mine
    },
    close: async () => undefined,
  }
  return {
    server,
    serverStore,
    transport,
    down() {
      isDown = true
      for (const conn of open) conn.close(1006, 'network down')
      open.clear()
    },
    up() {
      isDown = false
    },
    async device(id, deviceClock, extra = {}) {
      const store = stores.get(id) ?? new KeptOpenStore(memoryStore())
      stores.set(id, store)
      const d = await createDevice({
        id,
        store,
        clock: deviceClock,
        server: 'ws://memory-site',
        serverTransport: transport,
        siteKey: SITE_KEY,
        ...extra,
      })
      const close = d.close.bind(d)
      peers.add(d)
      return Object.assign(d, {
        close: async () => {
          peers.delete(d)
          await close()
        },
      })
    },
    async close() {
      for (const d of [...peers].reverse()) await d.close()
      await server.close()
      for (const store of stores.values()) await store.inner.close()
    },
  }
}
