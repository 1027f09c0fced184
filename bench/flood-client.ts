/**
 * The flooding client of the flood bench, in its own process: driven by
 * `bench/flood.ts` over stdin/stdout (see network-control.ts):
 *
 *   node --import tsx bench/flood-client.ts <url> <siteKey>
 *
 * Commands, each answered once the flood is over:
 * - `{ cmd: 'connections', count, holdSeconds }`: opens `count` WebSockets
 *   at once (devices `flood-<i>`), holds them open, then closes them all;
 * - `{ cmd: 'cycles', count }`: opens and closes a connection `count`
 *   times, one after another, each after its step 1 is answered;
 * - `{ cmd: 'updates', count }`: one device (`flood-writer`) sends `count`
 *   valid updates to its own part as fast as the socket takes them (it
 *   waits only while more than `SEND_BUFFER_BYTES_MAX` are unsent),
 *   reconnecting when the server closes it.
 * - `{ cmd: 'variants', links, seconds, client, clock }`: `links` devices
 *   (`variant-<i>`), each sending a step 1 every `VARIANT_INTERVAL_MS` that
 *   names `client` (the server's) at a clock of its own below `clock`, so
 *   that no two ask for the same answer (the answer cache cannot share
 *   them) and each lacks nearly the whole roster; each reads what comes
 *   back. Reports the answers (step 2s) and bytes received.
 * Socket errors (EMFILE when the process runs out of file descriptors,
 * refusals, resets) are counted by code, never fatal.
 *
 * The process runs at a lower scheduling priority (niceness
 * `BENCH_FLOOD_CLIENT_NICE`, 19 by default; 0 keeps the normal one; see
 * nice.ts): a real flood comes from other machines, whose CPUs are not the
 * server's. Lowered, it still opens every connection (the bench reports
 * how many opened and how long the flood took).
 */
import WebSocket from 'ws'
import * as Y from 'yjs'
import { encodeMessage } from '../core/protocol.js'
import { emitResult } from './bench.js'
import { commands, sourceAddress } from './network-control.js'
import { clientIdleClass, clientNice, idleClass, lowerPriority } from './nice.js'

/** What a flood reports. */
export interface FloodReport {
  readonly seconds: number
  /** Connections that opened. */
  readonly opened: number
  /** Errors and refusals by code (`EMFILE`, `ECONNRESET`, a close code...). */
  readonly errors: Record<string, number>
  /** Updates sent (the `updates` flood). */
  readonly sent?: number
  /** Times the server closed the writer's connection, by close code and reason. */
  readonly closes?: Record<string, number>
  /** The writer's Yjs clientIDs (one per connection), to count what the server applied. */
  readonly clientIds?: number[]
  /** Answers (step 2s) the `variants` flood received, and its bytes received in all. */
  readonly answers?: number
  readonly bytesReceived?: number
}

/** How often each link of the `variants` flood asks, ms (within the server's step-1 rate). */
const VARIANT_INTERVAL_MS = 20

/** Unsent bytes above which the writer waits for its socket to drain. */
const SEND_BUFFER_BYTES_MAX = 8 * 1024 * 1024

const count = (map: Record<string, number>, key: string): void => {
  map[key] = (map[key] ?? 0) + 1
}

const errorCode = (error: unknown): string =>
  (error as NodeJS.ErrnoException).code ?? (error as Error).message.slice(0, 60)

/** Opens a socket; resolves with it, or undefined after counting why it did not open. */
function open(
  url: string,
  device: string,
  siteKey: string,
  errors: Record<string, number>,
  localAddress?: string,
): Promise<WebSocket | undefined> {
  return new Promise((resolve) => {
    let socket: WebSocket
    try {
      const query = new URLSearchParams({ device, key: siteKey })
      socket = new WebSocket(`${url}/roster?${query.toString()}`, {
        perMessageDeflate: false,
        ...(localAddress === undefined ? {} : { localAddress }),
      })
    } catch (error) {
      count(errors, errorCode(error))
      resolve(undefined)
      return
    }
    const onError = (error: Error): void => {
      count(errors, errorCode(error))
      resolve(undefined)
    }
    const onClose = (code: number): void => {
      count(errors, `close ${code}`)
      resolve(undefined)
    }
    socket.once('open', () => {
      // From here on a close is the flood's own (or counted by the caller).
      socket.off('error', onError)
      socket.off('close', onClose)
      resolve(socket)
    })
    socket.once('error', onError)
    socket.once('close', onClose)
  })
}

function closeAll(sockets: readonly WebSocket[]): Promise<void> {
  return Promise.all(
    sockets.map(
      (s) =>
        new Promise<void>((resolve) => {
          if (s.readyState === WebSocket.CLOSED) return resolve()
          s.once('close', () => resolve())
          s.close(1000, 'flood done')
          setTimeout(() => {
            s.terminate()
            resolve()
          }, 5_000)
        }),
    ),
  ).then(() => undefined)
}

async function connections(url: string, siteKey: string, n: number, holdSeconds: number) {
  const started = performance.now()
  const errors: Record<string, number> = {}
  const sockets = (
    await Promise.all(
      Array.from({ length: n }, (_, i) =>
        open(url, `flood-${i}`, siteKey, errors, sourceAddress(i)),
      ),
    )
  ).filter((s): s is WebSocket => s !== undefined)
  for (const s of sockets) s.on('error', () => undefined)
  await new Promise((r) => setTimeout(r, holdSeconds * 1000))
  await closeAll(sockets)
  const report: FloodReport = {
    seconds: (performance.now() - started) / 1000,
    opened: sockets.length,
    errors,
  }
  return report
}

async function cycles(url: string, siteKey: string, n: number) {
  const started = performance.now()
  const errors: Record<string, number> = {}
  let opened = 0
  const step1 = encodeMessage({ type: 'sync-step1', stateVector: Y.encodeStateVector(new Y.Doc()) })
  for (let i = 0; i < n; i++) {
    const socket = await open(url, `flood-cycle-${i % 50}`, siteKey, errors)
    if (socket === undefined) continue
    opened++
    socket.on('error', () => undefined)
    // Answered once the server has handled it: the connection did real work.
    await new Promise<void>((resolve) => {
      socket.once('message', () => resolve())
      socket.once('close', () => resolve())
      setTimeout(resolve, 5_000)
      socket.send(step1)
    })
    await closeAll([socket])
  }
  const report: FloodReport = { seconds: (performance.now() - started) / 1000, opened, errors }
  return report
}

async function updates(url: string, siteKey: string, n: number) {
  const started = performance.now()
  const errors: Record<string, number> = {}
  const closes: Record<string, number> = {}
  const clientIds: number[] = []
  let opened = 0
  let sent = 0
  while (sent < n) {
    const socket = await open(url, 'flood-writer', siteKey, errors)
    if (socket === undefined) {
      await new Promise((r) => setTimeout(r, 100))
      continue
    }
    opened++
    let closed = false
    socket.on('close', (code, reason) => {
      closed = true
      count(closes, `${code} ${reason.toString().slice(0, 40)}`)
    })
    socket.on('error', () => undefined)
    // A fresh document per connection: what the server refused or dropped
    // of the last one would hold back every later update of its clientID.
    const doc = new Y.Doc()
    clientIds.push(doc.clientID)
    const part = doc.getMap(`u:flood-writer`)
    let pending: Uint8Array | undefined
    doc.on('update', (update: Uint8Array) => (pending = update))
    while (sent < n && !closed) {
      part.set(`flood-${sent % 1_000}`, {
        e: 0,
        f: { name: `Flood ${sent}` },
        s: { name: sent + 1 },
      })
      if (pending !== undefined)
        socket.send(encodeMessage({ type: 'sync-update', update: pending }))
      pending = undefined
      sent++
      if (socket.bufferedAmount > SEND_BUFFER_BYTES_MAX || sent % 1_000 === 0)
        await new Promise((r) => setImmediate(r))
    }
    if (!closed) await closeAll([socket])
  }
  const report: FloodReport = {
    seconds: (performance.now() - started) / 1000,
    opened,
    errors,
    sent,
    closes,
    clientIds,
  }
  return report
}

async function variants(
  url: string,
  siteKey: string,
  links: number,
  seconds: number,
  client: number,
  clock: number,
  /** Each asks the whole roster (the empty state vector: a cached answer) instead. */
  whole = false,
) {
  const started = performance.now()
  const errors: Record<string, number> = {}
  let answers = 0
  let bytesReceived = 0
  const sockets = (
    await Promise.all(
      Array.from({ length: links }, (_, i) => open(url, `variant-${i}`, siteKey, errors)),
    )
  ).filter((s): s is WebSocket => s !== undefined)
  const end = performance.now() + seconds * 1000
  await Promise.all(
    sockets.map(async (socket, k) => {
      let closed = false
      socket.on('error', () => undefined)
      socket.on('close', (code) => {
        closed = true
        count(errors, `close ${code}`)
      })
      socket.on('message', (data: Buffer) => {
        bytesReceived += data.byteLength
        // A step 2 is message type 0, sync message 1 (core/protocol.ts).
        if (data[0] === 0 && data[1] === 1) answers++
      })
      for (let n = 0; performance.now() < end && !closed; n++) {
        const from = (k * 100_003 + n * 7) % Math.max(1, Math.floor(clock / 2))
        const vector = Y.encodeStateVector(whole ? new Map() : new Map([[client, from]]))
        socket.send(encodeMessage({ type: 'sync-step1', stateVector: vector }))
        await new Promise((r) => setTimeout(r, VARIANT_INTERVAL_MS))
      }
    }),
  )
  await closeAll(sockets)
  const report: FloodReport = {
    seconds: (performance.now() - started) / 1000,
    opened: sockets.length,
    errors,
    answers,
    bytesReceived,
  }
  return report
}

async function main(): Promise<void> {
  const [url, siteKey] = process.argv.slice(2)
  if (url === undefined || siteKey === undefined) {
    console.error('usage: flood-client.ts <url> <siteKey>')
    process.exit(2)
  }
  const nice = clientNice('BENCH_FLOOD_CLIENT_NICE')
  const idle = clientIdleClass('BENCH_FLOOD_CLIENT_SCHED')
  lowerPriority(nice)
  let inIdleClass = idle && idleClass()
  emitResult({ ready: true, nice, idleClass: inIdleClass })
  for await (const command of commands()) {
    // Again for threads started meanwhile (V8's, libuv's).
    lowerPriority(nice)
    if (idle) inIdleClass = idleClass() && inIdleClass
    const n = Number(command.count)
    switch (command.cmd) {
      case 'connections':
        emitResult({ ...(await connections(url, siteKey, n, Number(command.holdSeconds))) })
        break
      case 'cycles':
        emitResult({ ...(await cycles(url, siteKey, n)) })
        break
      case 'updates':
        emitResult({ ...(await updates(url, siteKey, n)) })
        break
      case 'variants':
      case 'readers':
        emitResult({
          ...(await variants(
            url,
            siteKey,
            Number(command.links),
            Number(command.seconds),
            Number(command.client ?? 0),
            Number(command.clock ?? 0),
            command.cmd === 'readers',
          )),
        })
        break
      default:
        throw new Error(`unknown command ${JSON.stringify(command)}`)
    }
  }
}

await main()
