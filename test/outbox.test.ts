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
import { describe, expect, it } from 'vitest'
import { netLimits } from '../core/limits.js'
import type { Connection } from '../core/transport.js'
import { Outbox } from '../peers/sync-session/outbox.js'
import { ManualClock } from './helpers/manual-clock.js'

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

const PART = 16 * 1024 * 1024
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

  it('serves an answer larger than sendBufferBytesMax in full, making each part as the connection takes it', async () => {
    const conn = fakeConnection()
    const clock = new ManualClock()
    const outbox = new Outbox(conn, clock)
    // 40 parts of 16 MiB (640 MiB, past the 256 MiB bound), then a change.
    const count = 40
    let made = 0
    /** Most bytes made and not yet taken by the connection, at any time. */
    let aheadMax = 0
    outbox.sendEach(count, (i) => {
      made++
      aheadMax = Math.max(aheadMax, made - conn.sent.length)
      return message(i)
    })
    outbox.send(message(99, 10))
    expect(made).toBeLessThanOrEqual(netLimits.sendPauseBufferedBytesMin / PART + 1)
    // The peer reads a part every 10 ms.
    for (let step = 0; step < 2 * count && conn.open && conn.sent.length <= count; step++) {
      conn.buffered = Math.max(0, conn.buffered - PART)
      await clock.advance(10)
    }
    expect(conn.open).toBe(true)
    expect(conn.sent).toEqual([...Array.from({ length: count }, (_, i) => i), 99])
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
