/**
 * What a device takes of another device's stamps over the LAN
 * (`limits.lanStampSkewMsMax`). A device's HLC adopts every stamp it
 * takes, and its server takes stamps at most `stampSkewMsMax` ahead of its
 * own clock. A LAN neighbour whose stamps ran 62 minutes ahead (within the
 * hour of a device 3 minutes ahead of the server) pushed that device's
 * clock past what its server takes: every later write of the device was
 * refused by the server, at every sync (a hostile probe). Such stamps are
 * now refused on LAN links; a neighbour within the site's skew is taken.
 * Real loopback WebSocket to the server, in-memory LAN links.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { createDevice, type DevicePeer } from '../peers/create-device.js'
import { createServer } from '../server-peer/create-server.js'
import { memoryStore } from '../storage/level-store.js'
import { memoryPair } from '../transports/memory-transport.js'
import { eventually } from './helpers/eventually.js'
import { KeptOpenStore } from './helpers/forwarding-store.js'
import { offsetClock } from './helpers/skewed-clock.js'

const SITE_KEY = 'lan-stamps-site-key'
const MINUTE = 60_000
const closers: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close()
})

/**
 * D, 3 minutes ahead of the server's clock and linked to it, and H, which
 * synced once (to pin the server's key) and now runs `hAheadMs` ahead,
 * LAN-only, linked to D.
 */
async function site(hAheadMs: number): Promise<{
  d: DevicePeer
  h: DevicePeer
  serverEmail: () => unknown
}> {
  const server = await createServer({ store: memoryStore(), siteKey: SITE_KEY, port: 0 })
  closers.push(() => server.close())
  await server.users.put({ id: 'X', name: 'Xavier' })
  const d = await createDevice({
    id: 'D',
    store: memoryStore(),
    siteKey: SITE_KEY,
    server: server.url,
    clock: offsetClock({ ms: 3 * MINUTE }),
  })
  closers.push(() => d.close())
  await d.sync.whenReady()
  const store = new KeptOpenStore(memoryStore())
  const first = await createDevice({ id: 'H', store, siteKey: SITE_KEY, server: server.url })
  await first.sync.whenReady()
  await first.close()
  const h = await createDevice({
    id: 'H',
    store,
    siteKey: SITE_KEY,
    clock: offsetClock({ ms: hAheadMs }),
  })
  closers.push(() => h.close())
  const [toH, toD] = memoryPair('D', 'H')
  d.attachLan(toH, 'H')
  h.attachLan(toD, 'D')
  return { d, h, serverEmail: () => server.users.get('X')?.email }
}

describe('stamps a device takes from a LAN peer', () => {
  it("refuses a neighbour's stamps past lanStampSkewMsMax: its own writes still reach the server (hostile probe)", async () => {
    const { d, h, serverEmail } = await site(62 * MINUTE)
    await h.users.put({ id: 'H1', name: 'from H' })
    await eventually(() =>
      expect(d.events.query({ type: 'write-refused' })).toMatchObject([
        {
          code: 'INVALID_RECORD',
          message: expect.stringMatching(/^LAN H: .* ms ahead/) as unknown,
        },
      ]),
    )
    expect(d.users.get('H1')).toBeUndefined()
    await d.users.patch('X', { email: 'x@d.example' })
    await d.sync.whenIdle()
    expect(serverEmail()).toBe('x@d.example')
  })

  it("takes a neighbour's stamps within the site's skew (20 minutes ahead)", async () => {
    const { d, h, serverEmail } = await site(20 * MINUTE)
    await h.users.put({ id: 'H1', name: 'from H' })
    await eventually(() => expect(d.users.get('H1')?.name).toBe('from H'))
    await d.users.patch('X', { email: 'x@d.example' })
    await d.sync.whenIdle()
    expect(serverEmail()).toBe('x@d.example')
  })
})
