/**
 * A connection the device's link already left reports its close late (a
 * WebSocket's closing handshake; the server's 4410 SESSION_REPLACED to the
 * older connection once the newer one is up): that must not stop the
 * session of the connection the link is on now (issue 13, the aging bench:
 * every round failed with "connection closed", the next one reconnected,
 * the server replaced the older connection again, for ever). Here the
 * device's connections hand their close events to the test, which releases
 * the first one's after the link moved to a second connection (an answer
 * timeout made it retry), while a round is waiting on the second.
 */
import { afterEach, expect, it } from 'vitest'
import { netLimits } from '../core/limits.js'
import type { CloseInfo, Transport } from '../core/transport.js'
import { createDevice, type DevicePeer } from '../peers/create-device.js'
import { createServer, type ServerPeer } from '../server-peer/create-server.js'
import { memoryStore } from '../storage/level-store.js'
import { memoryPair } from '../transports/memory-transport.js'
import { ManualClock, settle } from './helpers/manual-clock.js'
import { wrapConnection } from './helpers/wrapped-connection.js'

const SITE_KEY = 'link-stale-close-site-key'
const closers: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close()
})

/** One device connection: its server messages and its close event wait while held. */
interface Held {
  holdMessages: boolean
  readonly messages: Array<() => void>
  readonly closes: Array<() => void>
}

function transport(s: ServerPeer, connections: Held[]): Transport {
  return {
    connect: async (url) => {
      const [mine, theirs] = memoryPair('device', 'server')
      s.accept(theirs, url)
      const held: Held = { holdMessages: false, messages: [], closes: [] }
      connections.push(held)
      return wrapConnection(mine, {
        onMessage: (handler) =>
          mine.onMessage((m) => {
            if (held.holdMessages) held.messages.push(() => handler(m))
            else handler(m)
          }),
        onClose: (handler: (info: CloseInfo) => void) =>
          mine.onClose((info) => held.closes.push(() => handler(info))),
      })
    },
    close: async () => undefined,
  }
}

it("a connection left behind closing late does not stop the current connection's session", async () => {
  const clock = new ManualClock()
  const s = await createServer({ store: memoryStore(), clock, listen: false, siteKey: SITE_KEY })
  closers.push(() => s.close())
  await s.users.put({ id: 'u1', name: 'Ann' })
  const connections: Held[] = []
  const d: DevicePeer = await createDevice({
    id: 'D1',
    store: memoryStore(),
    clock,
    server: 'ws://sim-server',
    serverTransport: transport(s, connections),
    siteKey: SITE_KEY,
  })
  closers.push(() => d.close())
  await d.sync.whenReady()
  expect(connections).toHaveLength(1)
  const first = connections[0] as Held
  // The server's answers stop coming on the first connection: the answer
  // timeout makes the link retry on a second one.
  first.holdMessages = true
  const timedOut = d.sync.delta().catch((error: unknown) => error)
  await settle()
  await clock.advance(netLimits.syncAnswerTimeoutMs)
  expect(await timedOut).toMatchObject({ code: 'SYNC_TIMEOUT' })
  await settle()
  expect(connections).toHaveLength(2)
  expect(d.sync.status().link).toBe('connected')
  const second = connections[1] as Held
  // A round waits on the second connection; then the first one's close
  // arrives, late.
  second.holdMessages = true
  const round = d.sync.delta().catch((error: unknown) => error)
  await settle()
  for (const close of first.closes.splice(0)) close()
  await settle()
  second.holdMessages = false
  for (const deliver of second.messages.splice(0)) deliver()
  await s.users.put({ id: 'u2', name: 'Bob' })
  expect(await round).toBeUndefined()
  await d.sync.delta()
  expect(d.users.get('u2')?.name).toBe('Bob')
  // No connection more than the two.
  expect(connections).toHaveLength(2)
})
