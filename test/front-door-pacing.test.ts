/**
 * The front door's pacing (issue 11, "2,000 connections opened at once"):
 * what many connections ask for together runs a slice per event-loop turn,
 * so that a connected device's message is read between slices.
 * - `TurnQueue` (server-peer/turn-queue.ts): at most `perTurnMax` items per
 *   turn, fewer once a turn took `turnMsMax`, in arrival order;
 * - a peer's close frame is answered, and its connection closed, in turns
 *   of `netLimits.closesPerTurnMax` (transports/ws-transport.ts): links
 *   closing together are torn down that many per turn; a message sent
 *   before the close is delivered at once.
 * Turns are counted with a `setImmediate` ticker in this process, never
 * timed; real sockets on 127.0.0.1.
 */
import type { IncomingMessage } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import WebSocket, { WebSocketServer } from 'ws'
import { netLimits } from '../core/limits.js'
import type { CloseInfo, Connection } from '../core/transport.js'
import {
  startSyncServer,
  type SyncEndpoint,
  type SyncServerOptions,
} from '../server-peer/sync-server.js'
import { TurnQueue } from '../server-peer/turn-queue.js'
import { wrapWebSocket } from '../transports/ws-transport.js'

const closers: Array<() => unknown> = []
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close()
})

const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

/** Counts event-loop turns (check phases) until stopped. */
function turnCounter(): { readonly now: () => number; stop(): void } {
  let turns = 0
  let timer: NodeJS.Immediate | undefined
  const tick = (): void => {
    turns++
    timer = setImmediate(tick)
  }
  timer = setImmediate(tick)
  return {
    now: () => turns,
    stop: () => clearImmediate(timer),
  }
}

const countsPerTurn = (turns: readonly number[]): number[] => {
  const counts = new Map<number, number>()
  for (const t of turns) counts.set(t, (counts.get(t) ?? 0) + 1)
  return [...counts.values()]
}

async function until(done: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 20_000 && !done(); i++) await new Promise((r) => setTimeout(r, 1))
  if (!done()) throw new Error(`timed out waiting for ${what}`)
}

describe('TurnQueue', () => {
  it('runs at most perTurnMax items per turn, in arrival order, and skips what did nothing', async () => {
    const done: number[] = []
    const queue = new TurnQueue<number>(
      (n) => {
        // Odd items are "gone": they do nothing and do not count.
        if (n % 2 === 1) return false
        done.push(n)
        return true
      },
      () => 4,
      () => Number.POSITIVE_INFINITY,
    )
    for (let i = 0; i < 30; i++) queue.add(i)
    expect(done).toEqual([])
    const perTurn: number[] = []
    while (queue.size > 0) {
      const before = done.length
      await turn()
      perTurn.push(done.length - before)
    }
    expect(perTurn).toEqual([4, 4, 4, 3])
    expect(done).toEqual(Array.from({ length: 15 }, (_, i) => i * 2))
    expect(queue.turns).toBe(4)
  })

  it('ends a turn once it took turnMsMax (at least one item), survives a throwing item, and gives back what waits on close', async () => {
    const done: number[] = []
    const queue = new TurnQueue<number>(
      (n) => {
        if (n === 2) throw new Error('this socket is unusable')
        const until = performance.now() + 2
        while (performance.now() < until);
        done.push(n)
        return true
      },
      () => 100,
      () => 3,
    )
    for (let i = 0; i < 6; i++) queue.add(i)
    await turn()
    // Two items take the turn's time; a third never starts in it.
    expect(done.length).toBeLessThanOrEqual(2)
    expect(done.length).toBeGreaterThanOrEqual(1)
    while (done.length < 5) await turn()
    expect(done).toEqual([0, 1, 3, 4, 5])
    for (let i = 10; i < 13; i++) queue.add(i)
    expect(queue.close()).toEqual([10, 11, 12])
    await turn()
    expect(done).toEqual([0, 1, 3, 4, 5])
  })
})

describe('a close frame waits for its turn (wrapWebSocket with deferClose)', () => {
  it('answers the close and closes the connection only when its turns run; a message before it is delivered at once', async () => {
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 })
    closers.push(() => wss.close())
    await new Promise<void>((resolve) => wss.once('listening', () => resolve()))
    const deferred: Array<() => boolean> = []
    const messages: string[] = []
    let serverClose: CloseInfo | undefined
    const serverSide = new Promise<Connection>((resolve) => {
      wss.once('connection', (ws: WebSocket, req: IncomingMessage) => {
        const connection = wrapWebSocket(ws, 'peer', {
          tcp: req.socket,
          deferClose: (answer) => deferred.push(answer),
        })
        connection.onMessage((m) => messages.push(Buffer.from(m).toString()))
        connection.onClose((info) => (serverClose = info))
        resolve(connection)
      })
    })
    const port = (wss.address() as AddressInfo).port
    const client = new WebSocket(`ws://127.0.0.1:${port}`, { perMessageDeflate: false })
    client.on('error', () => undefined)
    await new Promise<void>((resolve) => client.once('open', () => resolve()))
    const connection = await serverSide
    let clientClose: { code: number; reason: string } | undefined
    client.once('close', (code, reason) => (clientClose = { code, reason: reason.toString() }))
    client.send('last words')
    // Read on its own (one read holding both would be answered at once).
    await until(() => messages.length === 1, 'the message')
    client.close(1000, 'bye')
    await until(() => deferred.length === 1, 'the close frame to be deferred')
    // The message before it went through; the close waits, the link is open.
    expect(messages).toEqual(['last words'])
    for (let i = 0; i < 20; i++) await turn()
    expect(serverClose).toBeUndefined()
    expect(connection.open).toBe(true)
    expect(clientClose).toBeUndefined()
    // Its turn: ws answers the close, and the connection is closed.
    expect(deferred.shift()?.()).toBe(true)
    await until(() => clientClose !== undefined, 'the client to get the close')
    expect(clientClose).toEqual({ code: 1000, reason: 'bye' })
    await until(() => serverClose !== undefined, 'the server side to close')
    expect(deferred).toHaveLength(0)
    expect(serverClose).toEqual({ code: 1000, reason: 'bye', byPeer: true })
  })
})

/** startSyncServer with an endpoint that keeps every connection and notes when each closes. */
async function pacedServer(): Promise<{
  port: number
  links: Connection[]
  closedAt: number[]
  counter: ReturnType<typeof turnCounter>
}> {
  const counter = turnCounter()
  const links: Connection[] = []
  const closedAt: number[] = []
  const endpoint: SyncEndpoint = {
    accept: (connection) => {
      links.push(connection)
      connection.onClose(() => closedAt.push(counter.now()))
    },
    connectedDevices: () => [],
    disconnect: () => undefined,
    forget: () => undefined,
    closeAll: (code, reason) => {
      for (const link of links) link.close(code, reason)
    },
  }
  // Only the listening options matter here; the endpoint is a stand-in.
  const listening = await startSyncServer(
    {
      host: '127.0.0.1',
      port: 0,
    } as unknown as SyncServerOptions,
    endpoint,
  )
  closers.push(() => counter.stop())
  closers.push(() => listening.close())
  return { port: Number(new URL(listening.http).port), links, closedAt, counter }
}

describe('the server paces what connections ask for together', () => {
  it('tears down at most closesPerTurnMax links per turn when their peers close together', async () => {
    const server = await pacedServer()
    const n = netLimits.closesPerTurnMax * 5
    const clients = await Promise.all(
      Array.from({ length: n }, () => {
        const c = new WebSocket(`ws://127.0.0.1:${server.port}/room`, { perMessageDeflate: false })
        c.on('error', () => undefined)
        return new Promise<WebSocket>((resolve) => c.once('open', () => resolve(c)))
      }),
    )
    await until(() => server.links.length === n, 'every link to be accepted')
    const closed = clients.map(
      (c) => new Promise<number>((resolve) => c.once('close', (code) => resolve(code))),
    )
    for (const c of clients) c.close(1000, 'together')
    expect(await Promise.all(closed)).toEqual(clients.map(() => 1000))
    await until(() => server.closedAt.length === n, 'every link to be torn down')
    const perTurn = countsPerTurn(server.closedAt)
    expect(Math.max(...perTurn)).toBeLessThanOrEqual(netLimits.closesPerTurnMax)
    expect(perTurn.length).toBeGreaterThanOrEqual(n / netLimits.closesPerTurnMax)
  })
})
