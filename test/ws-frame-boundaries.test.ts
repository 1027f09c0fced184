/**
 * The close gate of transports/ws-transport.ts defers a read only when it
 * starts with a close frame at a frame boundary (`FrameBoundaries`). A TCP
 * read may start anywhere inside a frame, and a masked payload byte is 0x88
 * one time in 256: before the boundaries were followed, such a read was
 * taken for the peer's close frame and a healthy link uploading megabytes
 * was closed (review finding). Property: for frames of every length class
 * (7-bit, 16-bit, 64-bit lengths; masked or not) cut into reads anywhere,
 * `startsFrame` says yes exactly for the reads that start a frame. Then the
 * same over a real socket on 127.0.0.1: a frame whose payload begins with
 * 0x88, read on its own, is a message, not a close.
 *
 * Replay a failure: `ROSTERSYNC_SEED=<seed> npx vitest run test/ws-frame-boundaries.test.ts`
 */
import fc from 'fast-check'
import { createServer, type IncomingMessage } from 'node:http'
import { connect, type AddressInfo, type Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { afterEach, describe, expect, it } from 'vitest'
import WebSocket, { WebSocketServer } from 'ws'
import { FrameBoundaries, wrapWebSocket } from '../transports/ws-transport.js'
import { envInt, seedFromEnv } from './helpers/property-seed.js'

const seed = seedFromEnv()
const numRuns = envInt('ROSTERSYNC_PROPERTY_RUNS') ?? 200
console.log(
  `ws-frame-boundaries: seed ${seed}, ${numRuns} runs — replay: ROSTERSYNC_SEED=${seed} npx vitest run test/ws-frame-boundaries.test.ts`,
)

/** One frame's bytes (RFC 6455 5.2), its payload filled with `fill`. */
function frame(first: number, length: number, masked: boolean, fill: number): Buffer {
  const extended = length < 126 ? 0 : length < 65_536 ? 2 : 8
  const header = Buffer.alloc(2 + extended + (masked ? 4 : 0))
  header[0] = first
  header[1] = (masked ? 0x80 : 0) | (extended === 0 ? length : extended === 2 ? 126 : 127)
  if (extended === 2) header.writeUInt16BE(length, 2)
  if (extended === 8) header.writeBigUInt64BE(BigInt(length), 2)
  if (masked) header.writeUInt32BE(0x88888888, 2 + extended)
  return Buffer.concat([header, Buffer.alloc(length, fill)])
}

const frameArb = fc.record({
  first: fc.constantFrom(0x82, 0x81, 0x02, 0x80, 0x89, 0x8a, 0x88),
  length: fc.oneof(
    fc.integer({ min: 0, max: 125 }),
    fc.integer({ min: 126, max: 70_000 }),
    fc.constantFrom(0, 125, 126, 65_535, 65_536),
  ),
  masked: fc.boolean(),
})

/** A few frames in a row, and the sizes of the reads they arrive in. */
const framesArb = fc.array(frameArb, { minLength: 1, maxLength: 6 })
const cutsArb = fc.array(fc.integer({ min: 1, max: 80_000 }), { minLength: 1, maxLength: 40 })

/** Hands `bytes` to `read` cut into reads of the sizes `cuts` gives in turn, with each read's offset. */
function readInCuts(
  bytes: Buffer,
  cuts: readonly number[],
  read: (chunk: Buffer, at: number) => void,
): void {
  let at = 0
  for (let i = 0; at < bytes.length; i++) {
    const chunk = bytes.subarray(at, at + (cuts[i % cuts.length] as number))
    read(chunk, at)
    at += chunk.length
  }
}

describe('FrameBoundaries', () => {
  it('says a read starts a frame exactly when it does, however the bytes are cut', () => {
    fc.assert(
      fc.property(framesArb, cutsArb, (frames, cuts) => {
        // Payloads of 0x88: any read starting inside one looks like a close frame.
        const parts = frames.map((f) => frame(f.first, f.length, f.masked, 0x88))
        const starts = new Set<number>()
        let offset = 0
        for (const part of parts) {
          starts.add(offset)
          offset += part.length
        }
        const boundaries = new FrameBoundaries()
        readInCuts(Buffer.concat(parts), cuts, (read, at) =>
          expect(boundaries.startsFrame(read)).toBe(starts.has(at)),
        )
        // After the last frame, the next read starts one.
        expect(boundaries.startsFrame(Buffer.from([0x88, 0x80]))).toBe(true)
      }),
      { seed, numRuns },
    )
  })

  it('knows when a message is in progress, its payload bytes read, and the messages ended (RECEIVE_STALLED)', () => {
    fc.assert(
      fc.property(framesArb, cutsArb, (frames, cuts) => {
        const parts = frames.map((f) => frame(f.first, f.length, f.masked, 0x88))
        // The oracle, from RFC 6455 5.4: a message is in progress inside a
        // frame, and after a data frame (opcode < 8) without FIN until a
        // data frame with FIN ends it; control frames come in between and
        // add nothing to it. Each frame: where it starts, where its payload
        // starts, where it ends, and what it is.
        let offset = 0
        const laid = parts.map((part, i) => {
          const { first, length } = frames[i] as { first: number; length: number }
          const at = offset
          offset += part.length
          const data = (first & 0x0f) < 8
          return { at, payloadAt: offset - length, end: offset, data, fin: (first & 0x80) !== 0 }
        })
        const expected = (read: number) => {
          let fragmenting = false
          let ended = 0
          let messageStart = 0 // index of the first frame of the message in progress
          let inFrame = false
          for (const [i, f] of laid.entries()) {
            if (f.end <= read) {
              if (!f.data) continue
              fragmenting = !f.fin
              if (f.fin) {
                ended++
                messageStart = i + 1
              }
            } else if (f.at < read) inFrame = true
          }
          const inProgress = fragmenting || inFrame
          let bytes = 0
          if (inProgress)
            for (const f of laid.slice(messageStart))
              if (f.data) bytes += Math.max(0, Math.min(read, f.end) - f.payloadAt)
          return { inProgress, bytes, ended }
        }
        const boundaries = new FrameBoundaries()
        readInCuts(Buffer.concat(parts), cuts, (read, at) => {
          boundaries.startsFrame(read)
          const want = expected(at + read.length)
          expect(boundaries.inProgress).toBe(want.inProgress)
          expect(boundaries.bytesInProgress).toBe(want.inProgress ? want.bytes : 0)
          expect(boundaries.messagesEnded).toBe(want.ended)
        })
      }),
      { seed, numRuns },
    )
  })
})

const closers: Array<() => unknown> = []
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close()
})

describe('the close gate on a real socket', () => {
  it('takes a read that starts inside a frame with a 0x88 byte for data, not for a close', async () => {
    const http = createServer()
    const wss = new WebSocketServer({ noServer: true })
    const deferred: Array<() => boolean> = []
    const messages: number[] = []
    let closed = false
    http.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      wss.handleUpgrade(req, socket, head, (ws: WebSocket) => {
        const link = wrapWebSocket(ws, 'peer', {
          tcp: socket,
          deferClose: (answer) => deferred.push(answer),
        })
        link.onMessage((m) => messages.push(m.length))
        link.onClose(() => (closed = true))
      })
    })
    await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', () => resolve()))
    closers.push(() => new Promise((resolve) => http.close(resolve)))
    const port = (http.address() as AddressInfo).port
    const client: Socket = connect(port, '127.0.0.1')
    closers.push(() => client.destroy())
    const upgraded = new Promise<void>((resolve) => client.once('data', () => resolve()))
    client.write(
      'GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
    )
    await upgraded
    let ended = false
    client.on('end', () => (ended = true))
    // A binary frame of 200 bytes, masked with a zero key: its header in
    // one write, its payload (first byte 0x88) read on its own.
    client.write(Buffer.from([0x82, 0x80 | 126, 0, 200, 0, 0, 0, 0]))
    await new Promise((resolve) => setTimeout(resolve, 50))
    const payload = Buffer.alloc(200, 1)
    payload[0] = 0x88
    client.write(payload)
    for (let i = 0; i < 100 && messages.length === 0; i++)
      await new Promise((resolve) => setTimeout(resolve, 10))
    expect(messages).toEqual([200])
    // A second message still goes through: the link is open and reading.
    client.write(Buffer.from([0x82, 0x80 | 3, 0, 0, 0, 0, 1, 2, 3]))
    for (let i = 0; i < 100 && messages.length === 1; i++)
      await new Promise((resolve) => setTimeout(resolve, 10))
    expect(messages).toEqual([200, 3])
    expect(deferred).toHaveLength(0)
    expect(closed).toBe(false)
    expect(ended).toBe(false)
  })
})
