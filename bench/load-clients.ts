/**
 * The load of the load bench: `devices` lightweight protocol clients in this
 * one process, each a device in live mode editing the roster, driven by
 * `bench/load.ts` over stdin/stdout (see network-control.ts):
 *
 *   node --import tsx bench/load-clients.ts <url> <siteKey> <devices> <firstIndex> <users>
 *
 * A full `createDevice` per client (LevelDB, views, rules) would make 100
 * devices cost more CPU in this process than the server spends, and the
 * bench would measure the clients. Each client here is only what the server
 * sees of a device: a `ws` connection to `/roster?device=load-<k>`, the
 * y-websocket sync protocol (step 1 on connect, step 2 in answer to the
 * server's step 1), and one `Y.Doc` (its own random clientID) holding the
 * device's own part, `u:load-<k>`, written exactly as a device writes it
 * (`deviceWrite`, HLC stamps). Inbound messages are read, counted and
 * dropped, never applied: the server sends every device every edit, and
 * applying 2,000 updates a second in 100 documents is client work the
 * bench is not about. Reading them still matters: a client that stops
 * reading makes the server's send buffers grow.
 *
 * The process runs at a lower scheduling priority (niceness
 * `BENCH_LOAD_CLIENT_NICE`, 19 by default; 0 keeps the normal one). Real
 * devices are other machines; here the two client processes share the
 * server's cores, and at equal priority the scheduler kept the server's
 * main thread waiting for a CPU about a tenth of the time (Linux schedstat,
 * reported by the bench), which is the bench measuring itself. Lowered,
 * they still send every edit in its slot (the bench checks the send lag)
 * and read everything the server pushes. On Linux they also go in the
 * SCHED_IDLE class (`BENCH_LOAD_CLIENT_SCHED`, `idle` by default, `normal`
 * for niceness alone; bench/nice.ts says why niceness is not enough).
 *
 * Each client signs its writes as a device does (PROTOCOL.md, "Signed
 * writes"): its own key (seeded from its index), a join proof, clientIDs
 * derived from the key, every update sent as a signed envelope, and the
 * server's answers arrive signed. `BENCH_LOAD_SIGNED=0` runs the plain
 * protocol of an unmodified y-websocket client instead, to compare.
 *
 * Once every client has had the server's step 2 it prints `{ ready }`, then
 * answers commands until stdin closes:
 * - `{ cmd: 'load', seconds, rate }`: each device makes `seconds * rate`
 *   edits, the n-th at a random moment of the n-th 1/rate-second slot, and
 *   sends each as an update message; answers once all are sent.
 * - `{ cmd: 'ack', clients, timeoutMs }`: each device sends step 1 and
 *   reads, from the server's answering step 1, how many of its operations
 *   the server holds (the server answers a step 1 only after every earlier
 *   message of the connection is durable, PROTOCOL.md "Acknowledgement").
 *   `clients` are the Yjs clientIDs of every load device: the step 1 says
 *   the device has all of theirs, and the server's part as of its first
 *   answer, as a device in live mode would, so the server's step 2 is
 *   small (these devices never applied what they received).
 */
import * as decoding from 'lib0/decoding'
import * as Y from 'yjs'
import WebSocket from 'ws'
import { encodeStateVectorMap } from '../core/codec.js'
import type { DeviceEntry } from '../core/entries.js'
import { Hlc } from '../core/hlc.js'
import { netLimits } from '../core/limits.js'
import {
  decodeMessage,
  encodeMessage,
  MessageType,
  SignedType,
  SyncType,
} from '../core/protocol.js'
import type { FieldValue } from '../core/schema.js'
import {
  deriveClientId,
  encodeEnvelope,
  keyPairFromSeed,
  sealEnvelope,
  signJoinProof,
  type KeyPair,
} from '../core/signing.js'
import { deviceWrite } from '../core/writes.js'
import { emitResult, positiveIntArg, quantile } from './bench.js'
import {
  commands,
  cpuSeconds,
  difference,
  runQueueWaitSeconds,
  sourceAddress,
} from './network-control.js'
import { clientIdleClass, clientNice, idleClass, lowerPriority } from './nice.js'
import { prng, recordId } from './records.js'

/** Users each device edits, in turn: a device works on a handful of people at a time. */
export const USERS_PER_DEVICE = 10

/** The title edit `n` of a device sets: unique per edit, so every edit changes the entry. */
export const loadTitle = (deviceIndex: number, n: number): string => `Load edit ${deviceIndex}.${n}`

/** What the child prints once every client is synced. */
export interface ClientsReady {
  readonly ready: true
  /** Opening every connection until each had the server's step 2, seconds. */
  readonly connectSeconds: number
  /** Bytes of the server's first step 2 to one device (the whole roster). */
  readonly initialStep2Bytes: number
  /** The Yjs clientID of every device of this process. */
  readonly clientIds: readonly number[]
  /** The niceness this process runs at (see the module comment). */
  readonly nice: number
  /** Whether it runs in SCHED_IDLE (see the module comment). */
  readonly idleClass: boolean
}

/** Inbound traffic of this process during the load, by message kind. */
export interface InboundCounts {
  readonly updates: number
  /** Updates whose first operation is the receiving device's own: its edit sent back to it. */
  readonly echoes: number
  readonly updateBytes: number
  readonly step1: number
  readonly step2: number
  readonly step2Bytes: number
  readonly errors: number
  readonly other: number
}

/** The answer to `load`. */
export interface LoadDone {
  /** Edits this process sent (planned: devices * seconds * rate). */
  readonly sent: number
  readonly planned: number
  /** Wall seconds from the first slot to the last edit sent. */
  readonly seconds: number
  /** How late edits went out against their planned moment, ms (the process's own lag). */
  readonly lateP50Ms: number
  readonly lateP99Ms: number
  readonly lateMaxMs: number
  /** Bytes of update messages sent. */
  readonly bytesSent: number
  /** Largest send buffer one connection held (bytes the server had not read yet). */
  readonly bufferedMaxBytes: number
  readonly inbound: InboundCounts
  /** Error messages from the server, by code, with one message of each. */
  readonly refusals: Record<string, { count: number; example: string }>
  /** Connections that closed during the run. */
  readonly closed: number
  readonly cpuSeconds: number
  /**
   * Seconds this process's main thread was runnable but waited for a CPU
   * during the run (undefined where the kernel does not say): the clients
   * share the server's cores at a low priority, and a late edit with a long
   * wait here is the bench lagging, not the server.
   */
  readonly runQueueWaitSeconds: number | undefined
}

/** One device's edits as it counted them, and as the server acknowledged them. */
export interface DeviceAck {
  readonly id: string
  readonly clientId: number
  /** Operations of this device's clientID (one per edit). */
  readonly sent: number
  /** Operations of it the server holds, from its answering step 1; -1 when no answer came. */
  readonly acked: number
}

/** The answer to `ack`. */
export interface AckDone {
  readonly devices: readonly DeviceAck[]
  /** Seconds from sending step 1 to the last answer. */
  readonly seconds: number
}

/** Whether the clients sign (see the module comment). */
const SIGNED = process.env.BENCH_LOAD_SIGNED !== '0'
/** The nonce of every load device's one clientID. */
const NONCE = 1

/** Encoded sync-update / step 2 headers: the first two bytes of those messages. */
const isSync = (bytes: Uint8Array, sub: number): boolean =>
  bytes[0] === MessageType.sync && bytes[1] === sub

/** A lightweight device: a socket and its own part of the roster. */
class LoadDevice {
  readonly id: string
  readonly doc = new Y.Doc()
  private readonly hlc = new Hlc()
  private readonly own: Y.Map<DeviceEntry>
  private readonly socket: WebSocket
  private edits = 0
  /** Resolves the pending `ack`, fed by the server's answering step 1. */
  private onStep1: ((vector: Map<number, number>) => void) | undefined
  private onStep2: ((bytes: number) => void) | undefined
  /** The server's state vector from its first step 1: the roster this device was sent. */
  private rosterVector = new Map<number, number>()
  closed = false
  private readonly key: KeyPair | undefined
  /** The site (the server's key, base64), from its hello. */
  private site: string | undefined

  constructor(
    readonly index: number,
    url: string,
    siteKey: string,
    private readonly users: number,
    private readonly stats: ProcessStats,
  ) {
    this.id = `load-${index}`
    this.own = this.doc.getMap<DeviceEntry>(`u:${this.id}`)
    const query = new URLSearchParams({ device: this.id, name: this.id, key: siteKey })
    if (SIGNED) {
      const seed = new Uint8Array(32)
      new DataView(seed.buffer).setUint32(0, index + 1)
      this.key = keyPairFromSeed(seed)
      this.doc.clientID = deriveClientId(this.key.publicKey, NONCE)
      const at = Date.now()
      query.set('pub', Buffer.from(this.key.publicKey).toString('base64url'))
      query.set('at', String(at))
      query.set(
        'proof',
        Buffer.from(signJoinProof(this.key, 'roster', this.id, at)).toString('base64url'),
      )
    }
    this.socket = new WebSocket(`${url}/roster?${query.toString()}`, {
      maxPayload: netLimits.messageBytesMax,
      perMessageDeflate: false,
      // Devices are many hosts (1,000 from one address met the server's
      // per-address handshake cap).
      localAddress: sourceAddress(this.index),
    })
    this.socket.binaryType = 'nodebuffer'
    this.socket.on('message', (data: Buffer) => this.receive(data))
    this.socket.on('close', (code, reason) => {
      if (!this.closed) {
        this.closed = true
        stats.closed++
        console.error(`load-clients: ${this.id} closed by the server: ${code} ${reason.toString()}`)
      }
    })
    this.socket.on('error', (error) => console.error(`load-clients: ${this.id}: ${error.message}`))
    // Every change of the device's own part goes out as one update message,
    // as a device forwards each durable change.
    this.doc.on('update', (update: Uint8Array) => {
      const message = encodeMessage(
        this.key === undefined
          ? { type: 'sync-update', update }
          : { type: 'signed-update', envelopes: this.seal(update) },
      )
      stats.bytesSent += message.byteLength
      this.socket.send(message)
      stats.bufferedMax = Math.max(stats.bufferedMax, this.socket.bufferedAmount)
    })
  }

  /** Opens the connection and syncs: resolves with the size of the server's step 2. */
  async connect(): Promise<number> {
    await new Promise<void>((resolve, reject) => {
      this.socket.once('open', () => resolve())
      this.socket.once('unexpected-response', (_req, res) =>
        reject(new Error(`${this.id}: HTTP ${res.statusCode}`)),
      )
      this.socket.once('close', (code, reason) =>
        reject(new Error(`${this.id} refused: ${code} ${reason.toString()}`)),
      )
    })
    const step2 = new Promise<number>((resolve) => (this.onStep2 = resolve))
    this.sendStep1()
    return step2
  }

  /** Makes edit `n`: the device sets the title of one of its users, as `users.patch` would. */
  edit(n: number): void {
    const user = recordId(
      (this.index * USERS_PER_DEVICE + (n % USERS_PER_DEVICE)) % Math.max(1, this.users),
    )
    const written = new Map<string, FieldValue>([['title', loadTitle(this.index, n)]])
    // No server deletes happen in the bench, so the server epoch stays 0.
    const entry = deviceWrite(this.own.get(user), 0, written, this.hlc.next(Date.now()))
    this.own.set(user, entry)
    this.edits++
  }

  /**
   * Sends step 1 claiming the roster as first sent plus every operation of
   * `peers` (the other load devices), as an up-to-date device would have;
   * resolves with the server's state vector from its answering step 1.
   */
  requestAck(peers: readonly number[]): Promise<Map<number, number>> {
    const answer = new Promise<Map<number, number>>((resolve) => (this.onStep1 = resolve))
    const vector = new Map(this.rosterVector)
    // Far beyond any clock of the run; never the server's clientID, whose
    // clock a device must not overstate (the server would take a new one).
    for (const peer of peers) if (!vector.has(peer)) vector.set(peer, 2 ** 30)
    vector.set(this.doc.clientID, this.clock)
    this.socket.send(
      encodeMessage({ type: 'sync-step1', stateVector: encodeStateVectorMap(vector) }),
    )
    return answer
  }

  /** Operations of this device's clientID (every edit is one). */
  get clock(): number {
    return Y.getState(this.doc.store, this.doc.clientID)
  }

  get sent(): number {
    return this.edits
  }

  close(): void {
    this.closed = true
    this.socket.close(1000, 'bench done')
  }

  /** This device's update as its signed envelope (none before the server's hello). */
  private seal(update: Uint8Array): Uint8Array[] {
    if (this.key === undefined || this.site === undefined) return []
    return [
      encodeEnvelope(
        sealEnvelope(this.key, this.site, { writer: this.id, nonces: [NONCE], update }),
      ),
    ]
  }

  private sendStep1(): void {
    this.socket.send(
      encodeMessage({ type: 'sync-step1', stateVector: Y.encodeStateVector(this.doc) }),
    )
  }

  private receive(data: Buffer): void {
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
    const inbound = this.stats.inbound
    // The flood is updates; only their header is read.
    if (isSync(bytes, SyncType.update)) {
      inbound.updates++
      inbound.updateBytes += bytes.byteLength
      if (firstClient(bytes) === this.doc.clientID) inbound.echoes++
      return
    }
    // Signed messages: the server's step 2 (sub-type 1) or a fan-out update (2).
    const signed = bytes[0] === MessageType.signed
    if (signed && bytes[1] === SignedType.update) {
      inbound.updates++
      inbound.updateBytes += bytes.byteLength
      return
    }
    if (isSync(bytes, SyncType.step2) || signed) {
      inbound.step2++
      inbound.step2Bytes += bytes.byteLength
      const resolve = this.onStep2
      this.onStep2 = undefined
      resolve?.(bytes.byteLength)
      return
    }
    const message = decodeMessage(bytes)
    if (message.type === 'hello') {
      this.site = Buffer.from(message.serverKey).toString('base64')
      return
    }
    if (message.type === 'sync-step1') {
      inbound.step1++
      // Answer with what the server lacks of this device, as a device does.
      const update = Y.encodeStateAsUpdate(this.doc, message.stateVector)
      this.socket.send(
        encodeMessage(
          this.key === undefined
            ? { type: 'sync-step2', update }
            : { type: 'signed-step2', envelopes: this.seal(update) },
        ),
      )
      const vector = Y.decodeStateVector(message.stateVector)
      if (this.rosterVector.size === 0) this.rosterVector = vector
      const resolve = this.onStep1
      this.onStep1 = undefined
      resolve?.(vector)
    } else if (message.type === 'error') {
      inbound.errors++
      const seen = this.stats.refusals[message.code]
      if (seen === undefined) {
        this.stats.refusals[message.code] = { count: 1, example: message.message }
        console.error(`load-clients: ${this.id} refused: ${message.code} ${message.message}`)
      } else seen.count++
    } else inbound.other++
  }
}

/**
 * The Yjs clientID of the first operations in an update message (sync
 * header, payload length, then the update: client count, struct count,
 * client), or undefined for an update without operations.
 */
function firstClient(message: Uint8Array): number | undefined {
  const decoder = decoding.createDecoder(message)
  decoding.readVarUint(decoder)
  decoding.readVarUint(decoder)
  decoding.readVarUint(decoder)
  if (decoding.readVarUint(decoder) === 0) return undefined
  decoding.readVarUint(decoder)
  return decoding.readVarUint(decoder)
}

/** Counters shared by every device of this process. */
interface ProcessStats {
  inbound: {
    updates: number
    echoes: number
    updateBytes: number
    step1: number
    step2: number
    step2Bytes: number
    errors: number
    other: number
  }
  refusals: Record<string, { count: number; example: string }>
  bytesSent: number
  bufferedMax: number
  closed: number
}

const emptyInbound = (): ProcessStats['inbound'] => ({
  updates: 0,
  echoes: 0,
  updateBytes: 0,
  step1: 0,
  step2: 0,
  step2Bytes: 0,
  errors: 0,
  other: 0,
})

/**
 * Runs the edit schedule: device d makes edit n at `start + (n + u) / rate`
 * seconds, u uniform in [0, 1) (seeded per device), so the edits of every
 * device are spread over each second rather than sent in bursts. A late
 * timer sends its edit late, never skips it: the count stays the plan and
 * the lateness is reported.
 */
async function runLoad(
  devices: readonly LoadDevice[],
  seconds: number,
  rate: number,
  stats: ProcessStats,
): Promise<LoadDone> {
  stats.inbound = emptyInbound()
  stats.bytesSent = 0
  stats.bufferedMax = 0
  const perDevice = Math.floor(seconds * rate)
  const slotMs = 1000 / rate
  const late: number[] = []
  const cpuAtStart = cpuSeconds()
  const waitAtStart = runQueueWaitSeconds()
  const start = performance.now() + 50
  let lastSentAt = start
  await Promise.all(
    devices.map(
      (device) =>
        new Promise<void>((resolve) => {
          const jitter = prng(0x10ad_0000 + device.index)
          const step = (n: number): void => {
            if (n >= perDevice) {
              resolve()
              return
            }
            const at = start + (n + jitter()) * slotMs
            setTimeout(
              () => {
                const now = performance.now()
                late.push(now - at)
                if (!device.closed) device.edit(n)
                lastSentAt = Math.max(lastSentAt, now)
                step(n + 1)
              },
              Math.max(0, at - performance.now()),
            )
          }
          step(0)
        }),
    ),
  )
  return {
    sent: devices.reduce((sum, d) => sum + d.sent, 0),
    planned: perDevice * devices.length,
    seconds: (lastSentAt - start) / 1000,
    lateP50Ms: quantile(late, 0.5),
    lateP99Ms: quantile(late, 0.99),
    lateMaxMs: Math.max(...late),
    bytesSent: stats.bytesSent,
    bufferedMaxBytes: stats.bufferedMax,
    inbound: { ...stats.inbound },
    refusals: structuredClone(stats.refusals),
    closed: stats.closed,
    cpuSeconds: cpuSeconds() - cpuAtStart,
    runQueueWaitSeconds: difference(runQueueWaitSeconds(), waitAtStart),
  }
}

/** Asks every device's server for its acknowledgement, all at once. */
async function runAck(
  devices: readonly LoadDevice[],
  peers: readonly number[],
  timeoutMs: number,
): Promise<AckDone> {
  const started = performance.now()
  const acks = await Promise.all(
    devices.map(async (device): Promise<DeviceAck> => {
      const base = { id: device.id, clientId: device.doc.clientID, sent: device.clock }
      if (device.closed) return { ...base, acked: -1 }
      let timer: NodeJS.Timeout | undefined
      const timeout = new Promise<undefined>((resolve) => {
        timer = setTimeout(() => resolve(undefined), timeoutMs)
      })
      const vector = await Promise.race([device.requestAck(peers), timeout])
      clearTimeout(timer)
      return { ...base, acked: vector?.get(device.doc.clientID) ?? -1 }
    }),
  )
  return { devices: acks, seconds: (performance.now() - started) / 1000 }
}

async function main(): Promise<void> {
  const [url, siteKey, devicesArg, firstArg, usersArg] = process.argv.slice(2)
  if (url === undefined || siteKey === undefined) {
    console.error('usage: load-clients.ts <url> <siteKey> <devices> <firstIndex> <users>')
    process.exit(2)
  }
  const nice = clientNice('BENCH_LOAD_CLIENT_NICE')
  const idle = clientIdleClass('BENCH_LOAD_CLIENT_SCHED')
  lowerPriority(nice)
  let inIdleClass = idle && idleClass()
  const count = positiveIntArg(devicesArg, 'devices')
  const first = Number(firstArg)
  const users = positiveIntArg(usersArg, 'users')
  const stats: ProcessStats = {
    inbound: emptyInbound(),
    refusals: {},
    bytesSent: 0,
    bufferedMax: 0,
    closed: 0,
  }
  const started = performance.now()
  const devices = Array.from(
    { length: count },
    (_, k) => new LoadDevice(first + k, url, siteKey, users, stats),
  )
  const step2Sizes = await Promise.all(devices.map((device) => device.connect()))
  lowerPriority(nice)
  // Threads started meanwhile inherit the class; set again all the same.
  if (idle) inIdleClass = idleClass() && inIdleClass
  const ready: ClientsReady = {
    ready: true,
    connectSeconds: (performance.now() - started) / 1000,
    initialStep2Bytes: Math.max(...step2Sizes),
    clientIds: devices.map((device) => device.doc.clientID),
    nice,
    idleClass: inIdleClass,
  }
  emitResult({ ...ready })
  for await (const command of commands()) {
    switch (command.cmd) {
      case 'load':
        emitResult({
          ...(await runLoad(devices, Number(command.seconds), Number(command.rate), stats)),
        })
        break
      case 'ack':
        emitResult({
          ...(await runAck(devices, command.clients as number[], Number(command.timeoutMs))),
        })
        break
      default:
        throw new Error(`unknown command ${JSON.stringify(command)}`)
    }
  }
  for (const device of devices) device.close()
}

await main()
