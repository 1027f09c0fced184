/**
 * The probes of the load bench, in their own process so that their timing
 * does not share an event loop with the load: driven by `bench/load.ts`
 * over stdin/stdout (see network-control.ts):
 *
 *   node --import tsx bench/load-probe.ts <url> <http> <adminToken> <siteKey> <users>
 *
 * Two probes, each one request at a time, `rate` a second:
 * - HTTP: `GET /api/users/<id>` with the admin token (keep-alive, one
 *   socket), timed from the request to the last byte of the body;
 * - sync step 1: a device (`load-probe`, periodic mode, so the server does
 *   not push it every edit) sends step 1 with the state vector the server
 *   gave it in its previous answer, as a device that is up to date does,
 *   and times until the server's step 2 arrives (the server answers with
 *   its own step 1, then step 2: everything since the previous probe).
 *   The probe does not answer the server's step 1 (see SyncProbe).
 *
 * Prints `{ ready }` once connected and synced, then answers
 * `{ cmd: 'probe', seconds, rate }` with every time measured.
 */
import { Agent, request } from 'node:http'
import WebSocket from 'ws'
import * as Y from 'yjs'
import { netLimits } from '../core/limits.js'
import { decodeMessage, encodeMessage, MessageType, SyncType } from '../core/protocol.js'
import { emitResult, positiveIntArg } from './bench.js'
import { commands, cpuSeconds, difference, runQueueWaitSeconds } from './network-control.js'
import { prng, recordId } from './records.js'

/** The answer to `probe`. */
export interface ProbeTimes {
  /** HTTP GET of one user, ms, in order. */
  readonly httpMs: number[]
  /** Step 1 to step 2, ms, in order. */
  readonly syncMs: number[]
  /** Bytes of each step 2 (the delta since the previous probe, and the delete set). */
  readonly syncBytes: number[]
  /** Failed HTTP probes (status other than 200, or a socket error). */
  readonly httpErrors: number
  readonly cpuSeconds: number
  /** Seconds the probe's main thread waited for a CPU during the phase (undefined off Linux). */
  readonly runQueueWaitSeconds: number | undefined
}

/** One HTTP GET on a keep-alive socket; resolves with the status once the body is read. */
function get(agent: Agent, base: URL, path: string, token: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        agent,
        host: base.hostname,
        port: base.port,
        path,
        headers: { authorization: `Bearer ${token}` },
      },
      (res) => {
        res.on('data', () => undefined)
        res.on('end', () => resolve(res.statusCode ?? 0))
        res.on('error', reject)
      },
    )
    req.on('error', reject)
    req.end()
  })
}

/** The probe device: a socket whose every step 1 is answered by step 1 and step 2. */
class SyncProbe {
  private readonly socket: WebSocket
  /** The server's state vector from its latest step 1. */
  private vector: Uint8Array = Y.encodeStateVector(new Y.Doc())
  private waiting: ((bytes: number) => void) | undefined

  constructor(url: string, siteKey: string) {
    const query = new URLSearchParams({
      device: 'load-probe',
      name: 'load-probe',
      key: siteKey,
      mode: 'periodic',
    })
    this.socket = new WebSocket(`${url}/roster?${query.toString()}`, {
      maxPayload: netLimits.messageBytesMax,
      perMessageDeflate: false,
    })
    this.socket.binaryType = 'nodebuffer'
    this.socket.on('message', (data: Buffer) => {
      const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
      if (bytes[0] === MessageType.sync && bytes[1] === SyncType.step2) {
        const resolve = this.waiting
        this.waiting = undefined
        resolve?.(bytes.byteLength)
        return
      }
      const message = decodeMessage(bytes)
      if (message.type === 'sync-step1') {
        // Not answered with step 2, unlike a device: the server applies a
        // step 2 through its write queue, and the connection's next step 1
        // waits until it has. Probing 20 times a second, every probe would
        // wait behind the previous one's step 2, which a device that asks
        // once in a while never does; the probe times the answer alone.
        this.vector = message.stateVector
      } else if (message.type === 'error') {
        console.error(`load-probe: refused: ${message.code} ${message.message}`)
      }
    })
    this.socket.on('close', (code, reason) => {
      console.error(`load-probe: connection closed: ${code} ${reason.toString()}`)
    })
  }

  opened(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.socket.once('open', () => resolve())
      this.socket.once('error', reject)
    })
  }

  /** Sends step 1; resolves with the size of the server's step 2. */
  step1(): Promise<number> {
    return new Promise((resolve) => {
      this.waiting = resolve
      this.socket.send(encodeMessage({ type: 'sync-step1', stateVector: this.vector }))
    })
  }

  close(): void {
    this.socket.close(1000, 'bench done')
  }
}

/**
 * Runs `probe` every `1000 / rate` ms for `seconds`, starting `phase` of a
 * period late (the two probes take turns rather than ask at the same
 * moment), one at a time; a late one runs at once. No probe starts after
 * `seconds`: a slow server gets fewer probes, not a longer phase.
 */
async function paced(
  seconds: number,
  rate: number,
  phase: number,
  probe: () => Promise<void>,
): Promise<void> {
  const start = performance.now()
  const end = start + seconds * 1000
  for (let i = 0; ; i++) {
    const at = start + ((i + phase) * 1000) / rate
    if (at >= end || performance.now() >= end) return
    const wait = at - performance.now()
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait))
    await probe()
  }
}

async function main(): Promise<void> {
  const [url, http, adminToken, siteKey, usersArg] = process.argv.slice(2)
  if (
    url === undefined ||
    http === undefined ||
    adminToken === undefined ||
    siteKey === undefined
  ) {
    console.error('usage: load-probe.ts <url> <http> <adminToken> <siteKey> <users>')
    process.exit(2)
  }
  const users = positiveIntArg(usersArg, 'users')
  const base = new URL(http)
  const agent = new Agent({ keepAlive: true, maxSockets: 1 })
  const sync = new SyncProbe(url, siteKey)
  await sync.opened()
  // The first exchange fetches the whole roster; probes then ask for deltas.
  await sync.step1()
  emitResult({ ready: true })
  const pick = prng(0x10ad_beef)
  for await (const command of commands()) {
    if (command.cmd !== 'probe') throw new Error(`unknown command ${JSON.stringify(command)}`)
    const seconds = Number(command.seconds)
    const rate = Number(command.rate)
    const httpMs: number[] = []
    const syncMs: number[] = []
    const syncBytes: number[] = []
    let httpErrors = 0
    const cpuAtStart = cpuSeconds()
    const waitAtStart = runQueueWaitSeconds()
    await Promise.all([
      paced(seconds, rate, 0, async () => {
        const path = `/api/users/${recordId(Math.floor(pick() * users))}`
        const started = performance.now()
        try {
          const status = await get(agent, base, path, adminToken)
          if (status === 200) httpMs.push(performance.now() - started)
          else httpErrors++
        } catch {
          httpErrors++
        }
      }),
      paced(seconds, rate, 0.5, async () => {
        const started = performance.now()
        const bytes = await sync.step1()
        syncMs.push(performance.now() - started)
        syncBytes.push(bytes)
      }),
    ])
    const times: ProbeTimes = {
      httpMs,
      syncMs,
      syncBytes,
      httpErrors,
      cpuSeconds: cpuSeconds() - cpuAtStart,
      runQueueWaitSeconds: difference(runQueueWaitSeconds(), waitAtStart),
    }
    emitResult({ ...times })
  }
  sync.close()
  agent.destroy()
}

await main()
