/**
 * The session's outbox (peers/sync-session/outbox.ts): past
 * `netLimits.sendPauseBufferedBytesMin` buffered on the connection, what
 * the session sends waits, in order, and goes out as the connection
 * drains; an answer's parts are made as the connection takes them, so an
 * answer of any size goes out with bounded memory; a peer that never reads
 * is dropped once `netLimits.sendBufferBytesMax` waits, or once nothing
 * moved for `netLimits.sendStallMsMax`; an error sent before a close skips
 * what waits; a connection that does not say what it buffers is never
 * paused.
 */
import { afterEach, describe, expect, it } from 'vitest'
import WebSocket, { WebSocketServer } from 'ws'
import { netLimits } from '../core/limits.js'
import { encodeMessage } from '../core/protocol.js'
import type { Connection } from '../core/transport.js'
import { createDevice } from '../peers/create-device.js'
import { startSession } from '../peers/sync-session.js'
import { Outbox } from '../peers/sync-session/outbox.js'
import { memoryStore } from '../storage/level-store.js'
import { wsConnect } from '../transports/ws-transport.js'
import { eventually } from './helpers/eventually.js'
import { ManualClock } from './helpers/manual-clock.js'

const closers: Array<() => Promise<void> | void> = []
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close()
})

/** A connection that records what it is handed and buffers it until `drain`. */
function fakeConnection(reportsBuffer = true): Connection & {
  sent: number[]
  buffered: number
  closedWith: string | undefined
} {
  const conn = {
    id: 'fake',
    remote: 'fake',
    open: true,
    sent: [] as number[],
    buffered: 0,
    closedWith: undefined as string | undefined,
    get bufferedBytes() {
      return reportsBuffer ? conn.buffered : undefined
    },
    send(message: Uint8Array) {
      conn.sent.push(message[0] as number)
      conn.buffered += message.byteLength
    },
    onMessage: () => undefined,
    onClose: () => undefined,
    close(_code?: number, reason?: string) {
      conn.open = false
      conn.closedWith = reason
    },
  }
  return conn
}

const PART = 2 * 1024 * 1024
const message = (tag: number, bytes = PART): Uint8Array => {
  const m = new Uint8Array(bytes)
  m[0] = tag
  return m
}

describe('Outbox', () => {
  it('holds messages past the pause bound and sends them in order as the connection drains', async () => {
    const conn = fakeConnection()
    const clock = new ManualClock()
    const outbox = new Outbox(conn, clock)
    // An answer of 10 parts (160 MiB), then a small change behind it.
    for (let i = 0; i < 10; i++) outbox.send(message(i))
    outbox.send(message(99, 10))
    const first = conn.sent.length
    expect(first).toBe(netLimits.sendPauseBufferedBytesMin / PART + 1)
    expect(conn.buffered).toBeLessThan(netLimits.sendBufferBytesMax)
    await clock.advance(100)
    expect(conn.sent).toHaveLength(first) // nothing drained yet
    conn.buffered = 0
    await clock.advance(10)
    conn.buffered = 0
    await clock.advance(10)
    conn.buffered = 0
    await clock.advance(10)
    expect(conn.sent).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 99])
    expect(conn.open).toBe(true)
  })

  it('drops a peer that never reads once sendBufferBytesMax waits', () => {
    const conn = fakeConnection()
    const outbox = new Outbox(conn, new ManualClock())
    const parts = (netLimits.sendPauseBufferedBytesMin + netLimits.sendBufferBytesMax) / PART + 2
    const part = message(1)
    for (let i = 0; i < parts; i++) outbox.send(part)
    expect(conn.open).toBe(false)
    expect(conn.closedWith).toMatch(/^SEND_BUFFER_FULL/)
  })

  it('never pauses a connection that does not say what it buffers', () => {
    const conn = fakeConnection(false)
    const outbox = new Outbox(conn, new ManualClock())
    for (let i = 0; i < 30; i++) outbox.send(message(i, 1024))
    expect(conn.sent).toHaveLength(30)
  })

  it('leaves no poll behind when what it was handed went out at once', async () => {
    const conn = fakeConnection()
    const clock = new ManualClock()
    const outbox = new Outbox(conn, clock)
    // An answer of three small parts, sent as it is queued.
    outbox.sendEach(3, (i) => message(i, 100))
    expect(conn.sent).toEqual([0, 1, 2])
    expect(clock.pending).toBe(0)
    // Held past the pause bound, then drained: the last poll is the last timer.
    for (let i = 0; i < 10; i++) outbox.send(message(10 + i))
    expect(clock.pending).toBe(1)
    conn.buffered = 0
    await clock.advance(10)
    conn.buffered = 0
    await clock.advance(10)
    expect(conn.sent).toHaveLength(13)
    expect(clock.pending).toBe(0)
  })

  it('serves an answer larger than sendBufferBytesMax in full, making each part as the connection takes it', async () => {
    const conn = fakeConnection()
    const clock = new ManualClock()
    const outbox = new Outbox(conn, clock)
    // 200 parts of 2 MiB (400 MiB, past the 256 MiB bound), then a change
    // (tags are one byte: the change is 250).
    const count = 200
    expect(count * PART).toBeGreaterThan(netLimits.sendBufferBytesMax)
    let made = 0
    /** Most bytes made and not yet taken by the connection, at any time. */
    let aheadMax = 0
    outbox.sendEach(count, (i) => {
      made++
      aheadMax = Math.max(aheadMax, made - conn.sent.length)
      return message(i)
    })
    outbox.send(message(250, 10))
    expect(made).toBeLessThanOrEqual(netLimits.sendPauseBufferedBytesMin / PART + 1)
    // The peer reads a part every 10 ms.
    for (let step = 0; step < 2 * count && conn.open && conn.sent.length <= count; step++) {
      conn.buffered = Math.max(0, conn.buffered - PART)
      await clock.advance(10)
    }
    expect(conn.open).toBe(true)
    expect(conn.sent).toEqual([...Array.from({ length: count }, (_, i) => i), 250])
    expect(made).toBe(count)
    // Each part was made only when the connection took it.
    expect(aheadMax).toBe(1)
  })

  it('drops a peer that takes nothing for sendStallMsMax while an answer waits, and not before', async () => {
    const conn = fakeConnection()
    const clock = new ManualClock()
    const outbox = new Outbox(conn, clock)
    outbox.sendEach(10, (i) => message(i))
    const first = conn.sent.length
    await clock.advance(netLimits.sendStallMsMax - 100)
    expect(conn.open).toBe(true)
    // A little progress restarts the wait.
    conn.buffered -= 1
    await clock.advance(netLimits.sendStallMsMax - 100)
    expect(conn.open).toBe(true)
    expect(conn.sent).toHaveLength(first)
    await clock.advance(200)
    expect(conn.open).toBe(false)
    expect(conn.closedWith).toMatch(/^SEND_STALLED/)
  })

  it('a part that cannot be made closes the link (INTERNAL), not the process', async () => {
    const conn = fakeConnection()
    const clock = new ManualClock()
    const outbox = new Outbox(conn, clock)
    outbox.sendEach(10, (i) => {
      if (i === 6) throw new Error('no key')
      return message(i)
    })
    conn.buffered = 0
    await clock.advance(10)
    expect(conn.sent).toEqual([0, 1, 2, 3, 4, 5])
    expect(conn.open).toBe(false)
    expect(conn.closedWith).toMatch(/^INTERNAL: Error: no key/)
  })

  it('an error sent before a close skips what waits, so the peer learns the code', () => {
    const conn = fakeConnection()
    const outbox = new Outbox(conn, new ManualClock())
    outbox.sendEach(10, (i) => message(i))
    outbox.send(message(50, 10))
    const first = conn.sent.length
    outbox.closeWith(message(77, 10), 4400, 'REFUSED')
    expect(conn.sent).toEqual([...Array.from({ length: first }, (_, i) => i), 77])
    expect(conn.open).toBe(false)
    expect(conn.closedWith).toBe('REFUSED')
  })
})

describe('a trusted link stops reading while its inbox is full', () => {
  it('a server sending more than inboundBytesQueuedMax faster than the device handles it is paced, not refused', async () => {
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 })
    closers.push(() => new Promise<void>((resolve) => wss.close(() => resolve())))
    await new Promise((resolve) => wss.once('listening', resolve))
    const port = (wss.address() as { port: number }).port
    const accepted = new Promise<WebSocket>((resolve) => wss.once('connection', resolve))
    const device = await createDevice({ id: 'D1', store: memoryStore() })
    closers.push(() => device.close())
    const conn = await wsConnect(`ws://127.0.0.1:${port}`)
    closers.push(() => conn.close())
    const server = await accepted
    let closed: string | undefined
    conn.onClose((info) => (closed = `${info.code} ${info.reason}`))
    // The device handles nothing until its hello handler returns.
    let release = (): void => undefined
    const held = new Promise<void>((resolve) => (release = resolve))
    // What the device has read off the socket.
    const read = { bytes: 0 }
    const counted: Connection = {
      id: conn.id,
      remote: conn.remote,
      get open() {
        return conn.open
      },
      get bufferedBytes() {
        return conn.bufferedBytes
      },
      send: (message) => conn.send(message),
      onMessage: (handler) =>
        conn.onMessage((message) => {
          read.bytes += message.byteLength
          handler(message)
        }),
      onClose: (handler) => conn.onClose(handler),
      close: (code, reason) => conn.close(code, reason),
      pauseReading: () => conn.pauseReading?.(),
      resumeReading: () => conn.resumeReading?.(),
    }
    const session = startSession({
      replica: device.replica,
      connection: counted,
      sendStep1OnStart: false,
      onHello: () => held,
    })
    closers.push(() => session.stop())
    const hello = encodeMessage({
      type: 'hello',
      serverKey: new Uint8Array(32),
      certificate: new Uint8Array(0),
    })
    server.send(hello)
    const MIB = 1024 * 1024
    const count = Math.ceil((netLimits.inboundBytesQueuedMax + 32 * MIB) / (4 * MIB))
    const filler = encodeMessage({ type: 'awareness', payload: new Uint8Array(4 * MIB) })
    for (let i = 0; i < count; i++) server.send(filler)
    // The device stops reading: what it has not read waits at the server
    // (without the pause, it reads everything and refuses the link:
    // TOO_MANY_QUEUED_MESSAGES).
    let previous = -1
    for (let waited = 0; closed === undefined && waited < 30_000; waited += 500) {
      await new Promise((resolve) => setTimeout(resolve, 500))
      if (read.bytes === previous) break
      previous = read.bytes
    }
    expect(closed).toBeUndefined()
    expect(read.bytes).toBeGreaterThan(netLimits.inboundPauseBytesMin)
    expect(read.bytes).toBeLessThan(netLimits.inboundBytesQueuedMax)
    release()
    await eventually(
      () => expect(read.bytes).toBe(count * filler.byteLength + hello.byteLength),
      60_000,
    )
    await session.idle()
    expect(closed).toBeUndefined()
    expect(conn.open).toBe(true)
  }, 120_000)
})
