/**
 * Restore detection on a network that delivers an answer twice (the
 * simulator's does: duplicates, each copy with its own delay). Answers are
 * matched to the device's step 1s by arrival order (AskedVectors), so a
 * late copy of an old answer is taken as the answer to the next step 1,
 * which states what the server wrote since (heard directly). Compared with
 * that step 1, the server looked as if it had lost it: a restore found
 * where there was none, the roster fetched again, and the server's current
 * clientID noted lost, whose later operations the device then refused
 * over the LAN. Past what the device held when its session opened, only
 * what it heard over the LAN counts (ServerExchange.baseline). Real server
 * and devices over 127.0.0.1; the duplicate made by a wrapped transport.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { decodeMessage } from '../core/protocol.js'
import type { Connection, Transport } from '../core/transport.js'
import { createDevice } from '../peers/create-device.js'
import { lostClocks } from '../peers/device-sync/lost-clocks.js'
import { createServer } from '../server-peer/create-server.js'
import { wsConnect } from '../transports/ws-transport.js'
import { eventually } from './helpers/eventually.js'
import type { ServerPeer } from '../server-peer/create-server.js'
import type { DevicePeer } from '../peers/create-device.js'

const closers: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close().catch(() => undefined)
})

/** A transport whose server->device messages can be captured and replayed (a duplicate). */
function tappedTransport(): Transport & {
  capture: boolean
  captured: Uint8Array[]
  replay(): void
  replayOnStep1: number
} {
  let handler: ((m: Uint8Array) => void) | undefined
  const t = {
    capture: false,
    replayOnStep1: 0,
    captured: [] as Uint8Array[],
    replay() {
      for (const m of t.captured) handler?.(m.slice())
    },
    async connect(address: string): Promise<Connection> {
      const conn = await wsConnect(address)
      const wrapped: Connection = {
        id: conn.id,
        remote: conn.remote,
        get open() {
          return conn.open
        },
        send: (m) => {
          conn.send(m)
          if (t.replayOnStep1 > 0 && decodeMessage(m).type === 'sync-step1') {
            t.replayOnStep1--
            // A (delayed) duplicate of the captured answer arrives right after
            // the device's step 1 went out (the simulator's dup + jitter).
            t.replay()
          }
        },
        onMessage: (h) => {
          handler = h
          conn.onMessage((m) => {
            if (t.capture) {
              const type = decodeMessage(m).type
              if (type === 'sync-step1' || type === 'signed-update' || type === 'signed-step2') {
                t.captured.push(m.slice())
                if (type === 'signed-step2') t.capture = false
              }
            }
            h(m)
          })
        },
        onClose: (h) => conn.onClose(h),
        close: (c, r) => conn.close(c, r),
      }
      return wrapped
    },
    async close() {},
  }
  return t
}

/** The roster as a device or the server shows it, sorted by id. */
const rosterOf = (peer: ServerPeer | DevicePeer): unknown =>
  [...peer.users.list()].sort((a, b) => a.id.localeCompare(b.id))

describe('restore detection on a network that duplicates answers', () => {
  it('takes a late copy of an old answer for no restore', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'rostersync-dup-answer-'))
    closers.push(() => rm(dir, { recursive: true, force: true }))
    const peer = await createServer({ dataDir: join(dir, 'server'), port: 0 })
    closers.push(() => peer.close())
    await peer.users.put({ id: 'U1', name: 'User 1' })
    const siteKey = peer.siteKey
    const tap = tappedTransport()
    const e = await createDevice({
      id: 'E',
      dataDir: join(dir, 'E'),
      server: peer.url,
      ...(siteKey === undefined ? {} : { siteKey }),
      lan: { enabled: true, mdns: false, peers: [] },
    })
    closers.push(() => e.close())
    await e.sync.whenReady()
    const d = await createDevice({
      id: 'D',
      dataDir: join(dir, 'D'),
      server: peer.url,
      serverTransport: tap,
      ...(siteKey === undefined ? {} : { siteKey }),
      lan: { enabled: true, mdns: false, peers: e.lanAddresses },
    })
    closers.push(() => d.close())
    await d.sync.whenReady()
    await eventually(() => expect(d.sync.status().lan?.peers).toBe(1), 30_000)

    // A round whose answer the network delivers a second time, later.
    tap.capture = true
    await d.sync.delta()
    expect(tap.captured.length).toBeGreaterThan(0)
    // The server writes after that answer; D hears it directly.
    await peer.users.put({ id: 'U2', name: 'User 2' })
    await eventually(() => expect(d.users.get('U2')).toBeDefined())
    // D's next round: its step 1 states U2; the late copy arrives first.
    tap.replayOnStep1 = 2
    await d.sync.delta()
    await d.sync.whenIdle()
    expect(d.events.query({ type: 'restore-detected' })).toHaveLength(0)
    expect([...lostClocks(d.replica)]).toEqual([])
    expect(rosterOf(d)).toEqual(rosterOf(peer))
  }, 60_000)
})
