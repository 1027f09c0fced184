/**
 * The legitimate client of the flood bench, alone in its own process so
 * that the flood's work does not share its event loop: driven by
 * `bench/flood.ts` over stdin/stdout (see network-control.ts):
 *
 *   node --import tsx bench/flood-probe.ts <url> <siteKey>
 *
 * A device (`flood-probe`, periodic mode) sends sync step 1 `rate` times a
 * second, one at a time, with the state vector of the server's previous
 * answer (a device that is up to date), and times the round trip to the
 * server's step 2.
 * A probe the server does not answer within `PROBE_TIMEOUT_MS` counts as
 * that long and as a timeout; a closed connection is reopened (counted), so
 * a flood that knocks the probe off shows in its figures instead of hanging
 * the bench. Answers `{ cmd: 'probe', seconds, rate }` with `{ syncMs,
 * timeouts, reconnects }`.
 */
import WebSocket from 'ws'
import * as Y from 'yjs'
import { netLimits } from '../core/limits.js'
import { decodeMessage, encodeMessage, MessageType, SyncType } from '../core/protocol.js'
import { emitResult } from './bench.js'
import { commands } from './network-control.js'

/** The answer to `probe`. */
export interface FloodProbeTimes {
  /** Step 1 to step 2, ms, in order (timeouts included, as PROBE_TIMEOUT_MS). */
  readonly syncMs: number[]
  readonly timeouts: number
  readonly reconnects: number
}

/** Longest a probe waits for its answer, ms. */
export const PROBE_TIMEOUT_MS = 5_000

/** One probe connection; reopened by the caller when it closes. */
class Probe {
  private waiting: (() => void) | undefined
  closed = false
  /** The server's state vector from its latest step 1: the next probe asks only for what is new. */
  vector: Uint8Array = Y.encodeStateVector(new Y.Doc())

  private constructor(private readonly socket: WebSocket) {
    socket.binaryType = 'nodebuffer'
    socket.on('message', (data: Buffer) => {
      if (data[0] === MessageType.sync && data[1] === SyncType.step1) {
        const message = decodeMessage(new Uint8Array(data.buffer, data.byteOffset, data.byteLength))
        if (message.type === 'sync-step1') this.vector = message.stateVector
      } else if (data[0] === MessageType.sync && data[1] === SyncType.step2) {
        const resolve = this.waiting
        this.waiting = undefined
        resolve?.()
      }
    })
    socket.on('close', () => {
      this.closed = true
    })
    socket.on('error', () => undefined)
  }

  static open(url: string, siteKey: string): Promise<Probe> {
    const query = new URLSearchParams({ device: 'flood-probe', key: siteKey, mode: 'periodic' })
    const socket = new WebSocket(`${url}/roster?${query.toString()}`, {
      maxPayload: netLimits.messageBytesMax,
      perMessageDeflate: false,
    })
    return new Promise((resolve, reject) => {
      socket.once('open', () => resolve(new Probe(socket)))
      socket.once('error', reject)
    })
  }

  /** One round trip, ms; undefined on a timeout. */
  async step1(): Promise<number | undefined> {
    const vector = this.vector
    const started = performance.now()
    let timer: NodeJS.Timeout | undefined
    const answered = await new Promise<boolean>((resolve) => {
      this.waiting = () => resolve(true)
      timer = setTimeout(() => resolve(false), PROBE_TIMEOUT_MS)
      this.socket.send(encodeMessage({ type: 'sync-step1', stateVector: vector }))
    })
    clearTimeout(timer)
    this.waiting = undefined
    return answered ? performance.now() - started : undefined
  }

  close(): void {
    this.socket.close(1000, 'bench done')
  }
}

async function main(): Promise<void> {
  const [url, siteKey] = process.argv.slice(2)
  if (url === undefined || siteKey === undefined) {
    console.error('usage: flood-probe.ts <url> <siteKey>')
    process.exit(2)
  }
  let probe = await Probe.open(url, siteKey)
  // The first exchange fetches the whole roster; probes then ask for deltas,
  // as a device that is up to date does.
  await probe.step1()
  emitResult({ ready: true })
  for await (const command of commands()) {
    if (command.cmd !== 'probe') throw new Error(`unknown command ${JSON.stringify(command)}`)
    const end = performance.now() + Number(command.seconds) * 1000
    const period = 1000 / Number(command.rate)
    const syncMs: number[] = []
    let timeouts = 0
    let reconnects = 0
    while (performance.now() < end) {
      const started = performance.now()
      if (probe.closed) {
        try {
          probe = await Probe.open(url, siteKey)
          reconnects++
        } catch {
          await new Promise((r) => setTimeout(r, period))
          continue
        }
      }
      const ms = await probe.step1()
      if (ms === undefined) timeouts++
      syncMs.push(ms ?? PROBE_TIMEOUT_MS)
      const wait = period - (performance.now() - started)
      if (wait > 0) await new Promise((r) => setTimeout(r, wait))
    }
    const times: FloodProbeTimes = { syncMs, timeouts, reconnects }
    emitResult({ ...times })
  }
  probe.close()
}

await main()
