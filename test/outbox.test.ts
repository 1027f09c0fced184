/**
 * The session's outbox (peers/sync-session/outbox.ts): past
 * `netLimits.sendPauseBufferedBytesMin` buffered on the connection, what
 * the session sends waits, in order, and goes out as the connection
 * drains; a peer that never reads is dropped once
 * `netLimits.sendBufferBytesMax` waits; a connection that does not say
 * what it buffers is never paused.
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
})
