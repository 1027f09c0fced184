/**
 * Devices of the fleet bench: `devices` lightweight protocol clients in
 * this one process, driven by `bench/fleet.ts` over stdin/stdout:
 *
 *   node --import tsx bench/fleet-clients.ts <url> <siteKey> <devices> <firstIndex>
 *
 * Each client is what the server sees of a device in live mode (as in
 * `load-clients.ts`, whose join it copies): a `ws` connection to
 * `/roster?device=fleet-<k>` with a signed join (its own Ed25519 key,
 * seeded from its index; `BENCH_FLEET_SIGNED=0` for the plain protocol),
 * step 1 on connect, an answer to the server's step 1, and an empty
 * `Y.Doc`. What the server pushes is read and counted, never applied: a
 * full device per connection (LevelDB, views) would make this process,
 * not the server, the thing measured. Connections come from 127.0.0.2 to
 * 127.0.0.9 (by index), as from a site's many hosts: the server bounds
 * handshakes per address (`netLimits.handshakesPerAddressMax`).
 *
 * A connection the server closes (a restart) is opened again after a
 * random 0.5-2 s, as a device's backoff spreads its retries. The first
 * connection fetches the whole roster (a fresh device); a reconnection
 * sends step 1 with the state vector of the server's first step 1, as a
 * device holding the roster would, so the server answers with what
 * changed since (these clients never apply what they receive).
 *
 * Commands (one answer line each):
 * - `{ cmd: 'arm' }`: the next update each device receives is timed;
 * - `{ cmd: 'collect', timeoutMs }`: waits until every device has received
 *   it (or the timeout) and answers the arrival times (shared clock);
 * - `{ cmd: 'synced', timeoutMs }`: waits until every device is connected
 *   and has had its step 2 since it last connected; answers when the last
 *   did, and how many reconnections there were;
 * - `{ cmd: 'stats' }`: this process's CPU seconds and RSS.
 */
import * as Y from 'yjs'
import WebSocket from 'ws'
import { netLimits } from '../core/limits.js'
import {
  decodeMessage,
  encodeMessage,
  MessageType,
  SignedType,
  SyncType,
} from '../core/protocol.js'
import {
  deriveClientId,
  encodeEnvelope,
  keyPairFromSeed,
  sealEnvelope,
  signJoinProof,
  type KeyPair,
} from '../core/signing.js'
import { emitResult, positiveIntArg } from './bench.js'
import { commands, cpuSeconds, sharedClockMs, sourceAddress } from './network-control.js'
import { prng } from './records.js'

const SIGNED = process.env.BENCH_FLEET_SIGNED !== '0'
const NONCE = 1

/** The answer to `collect`. */
export interface FleetArrivals {
  /** Shared-clock ms each device received the armed update; null when it did not. */
  readonly arrivals: ReadonlyArray<number | null>
}

/** The answer to `synced`. */
export interface FleetSynced {
  /** Devices connected and synced. */
  readonly synced: number
  /** Shared-clock ms the last of them had its step 2. */
  readonly lastSyncedAtMs: number
  /** Connections opened again since the start. */
  readonly reconnects: number
  /** Connection attempts that failed (refused, reset), by reason. */
  readonly failures: Record<string, number>
}

interface Shared {
  reconnects: number
  failures: Record<string, number>
  refusals: Record<string, number>
}

class FleetDevice {
  readonly id: string
  private readonly doc = new Y.Doc()
  private readonly key: KeyPair | undefined
  private site: string | undefined
  private socket: WebSocket | undefined
  /** The server's state vector from its first step 1 (see the module comment). */
  private rosterVector: Uint8Array | undefined
  private readonly jitter: () => number
  synced = false
  syncedAtMs = 0
  armed = false
  arrivalMs: number | null = null
  stopped = false

  constructor(
    readonly index: number,
    private readonly url: string,
    private readonly siteKey: string,
    private readonly shared: Shared,
  ) {
    this.id = `fleet-${index}`
    this.jitter = prng(0xf1ee_0000 + index)
    if (SIGNED) {
      const seed = new Uint8Array(32)
      new DataView(seed.buffer).setUint32(0, 0x0f1e_e700 + index)
      this.key = keyPairFromSeed(seed)
      this.doc.clientID = deriveClientId(this.key.publicKey, NONCE)
    }
  }

  /** Opens the connection (again); the step 2 that follows marks it synced. */
  open(): void {
    this.synced = false
    const query = new URLSearchParams({ device: this.id, name: this.id, key: this.siteKey })
    if (this.key !== undefined) {
      const at = Date.now()
      query.set('pub', Buffer.from(this.key.publicKey).toString('base64url'))
      query.set('at', String(at))
      query.set(
        'proof',
        Buffer.from(signJoinProof(this.key, 'roster', this.id, at)).toString('base64url'),
      )
    }
    const socket = new WebSocket(`${this.url}/roster?${query.toString()}`, {
      maxPayload: netLimits.messageBytesMax,
      perMessageDeflate: false,
      localAddress: sourceAddress(this.index),
    })
    this.socket = socket
    socket.binaryType = 'nodebuffer'
    socket.on('open', () =>
      socket.send(
        encodeMessage({
          type: 'sync-step1',
          stateVector: this.rosterVector ?? Y.encodeStateVector(this.doc),
        }),
      ),
    )
    socket.on('message', (data: Buffer) => this.receive(socket, data))
    socket.on('error', (error: NodeJS.ErrnoException) => {
      const reason = error.code ?? error.message.slice(0, 40)
      this.shared.failures[reason] = (this.shared.failures[reason] ?? 0) + 1
    })
    socket.on('close', () => {
      if (this.socket !== socket) return
      this.synced = false
      if (this.stopped) return
      this.shared.reconnects++
      setTimeout(() => this.open(), 500 + 1500 * this.jitter())
    })
  }

  close(): void {
    this.stopped = true
    this.socket?.close(1000, 'bench done')
  }

  private seal(update: Uint8Array): Uint8Array[] {
    if (this.key === undefined || this.site === undefined) return []
    return [
      encodeEnvelope(
        sealEnvelope(this.key, this.site, { writer: this.id, nonces: [NONCE], update }),
      ),
    ]
  }

  private receive(socket: WebSocket, data: Buffer): void {
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
    const signed = bytes[0] === MessageType.signed
    const update =
      (bytes[0] === MessageType.sync && bytes[1] === SyncType.update) ||
      (signed && bytes[1] === SignedType.update)
    if (update) {
      if (this.armed && this.arrivalMs === null) this.arrivalMs = sharedClockMs()
      return
    }
    if ((bytes[0] === MessageType.sync && bytes[1] === SyncType.step2) || signed) {
      if (!this.synced) {
        this.synced = true
        this.syncedAtMs = sharedClockMs()
      }
      return
    }
    const message = decodeMessage(bytes)
    if (message.type === 'hello') {
      this.site = Buffer.from(message.serverKey).toString('base64')
    } else if (message.type === 'sync-step1') {
      this.rosterVector ??= message.stateVector
      const update = Y.encodeStateAsUpdate(this.doc, message.stateVector)
      socket.send(
        encodeMessage(
          this.key === undefined
            ? { type: 'sync-step2', update }
            : { type: 'signed-step2', envelopes: this.seal(update) },
        ),
      )
    } else if (message.type === 'error') {
      this.shared.refusals[message.code] = (this.shared.refusals[message.code] ?? 0) + 1
    }
  }
}

/** Resolves once `check` holds (polled every 20 ms) or `timeoutMs` passed. */
async function waitFor(check: () => boolean, timeoutMs: number): Promise<void> {
  const end = performance.now() + timeoutMs
  while (!check() && performance.now() < end) await new Promise((r) => setTimeout(r, 20))
}

async function main(): Promise<void> {
  const [url, siteKey, devicesArg, firstArg] = process.argv.slice(2)
  if (url === undefined || siteKey === undefined) {
    console.error('usage: fleet-clients.ts <url> <siteKey> <devices> <firstIndex>')
    process.exit(2)
  }
  const count = positiveIntArg(devicesArg, 'devices')
  const first = Number(firstArg)
  const shared: Shared = { reconnects: 0, failures: {}, refusals: {} }
  const devices = Array.from(
    { length: count },
    (_, k) => new FleetDevice(first + k, url, siteKey, shared),
  )
  for (const device of devices) device.open()
  for await (const command of commands()) {
    switch (command.cmd) {
      case 'arm':
        for (const device of devices) {
          device.armed = true
          device.arrivalMs = null
        }
        emitResult({ armed: true })
        break
      case 'collect': {
        await waitFor(() => devices.every((d) => d.arrivalMs !== null), Number(command.timeoutMs))
        const arrivals: FleetArrivals = { arrivals: devices.map((d) => d.arrivalMs) }
        for (const device of devices) device.armed = false
        emitResult({ ...arrivals })
        break
      }
      case 'synced': {
        await waitFor(() => devices.every((d) => d.synced), Number(command.timeoutMs))
        const synced = devices.filter((d) => d.synced)
        const answer: FleetSynced = {
          synced: synced.length,
          lastSyncedAtMs: Math.max(...synced.map((d) => d.syncedAtMs)),
          reconnects: shared.reconnects,
          failures: { ...shared.failures, ...prefixed(shared.refusals) },
        }
        emitResult({ ...answer })
        break
      }
      case 'stats':
        emitResult({ cpuSeconds: cpuSeconds(), rssBytes: process.memoryUsage.rss() })
        break
      default:
        throw new Error(`unknown command ${JSON.stringify(command)}`)
    }
  }
  for (const device of devices) device.close()
}

/** Refusal codes, marked as such next to socket errors. */
function prefixed(refusals: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(refusals).map(([code, n]) => [`refused ${code}`, n]))
}

await main()
