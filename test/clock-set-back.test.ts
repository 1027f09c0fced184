/**
 * Clocks that ran ahead and were set back (years probe). A server whose
 * clock ran a day ahead for a while stamped its writes a day ahead; the
 * devices took those stamps, and after the clock was set right every
 * device write carried a stamp a day ahead of the server's clock: refused
 * (`INVALID_RECORD`) for a day, at every device, after a restart too. The
 * server now judges stamps from the latest time it stamped at itself
 * (stored), and a device from its server's latest stamp as well
 * (Replica.stampHorizon).
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { stampMs } from '../core/hlc.js'
import { limits } from '../core/limits.js'
import { createDevice } from '../peers/create-device.js'
import { link } from '../peers/memory-link.js'
import { memoryStore } from '../storage/level-store.js'
import { createServer } from '../server-peer/create-server.js'
import { netLimits } from '../core/limits.js'
import { eventually } from './helpers/eventually.js'
import { withLimits } from './helpers/limits.js'
import { ManualClock } from './helpers/manual-clock.js'
import { offsetClock, skewedClock } from './helpers/skewed-clock.js'

const SITE_KEY = 'clock-set-back-key'
const DAY = 86_400_000
let dir = ''
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rostersync-clock-back-'))
})
afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

describe('a server whose clock ran a day ahead, then was set right', () => {
  it("still takes its devices' writes, and after a restart too", async () => {
    // Back within a second of the restart (not spread over 45 s).
    withLimits(netLimits, { reconnectAfterRestartSpreadMs: 1_000 })
    const offset = { ms: DAY }
    const serverDir = join(dir, 'server')
    let server = await createServer({
      dataDir: serverDir,
      siteKey: SITE_KEY,
      clock: offsetClock(offset),
    })
    await server.users.put({ id: 'ahead', name: 'Written a day ahead' })
    offset.ms = 0
    await server.users.put({ id: 'after', name: 'Written after' })
    const device = await createDevice({
      id: 'D1',
      dataDir: join(dir, 'device'),
      server: server.url,
      siteKey: SITE_KEY,
    })
    try {
      await device.sync.whenReady()
      expect(device.users.get('ahead')?.name).toBe('Written a day ahead')
      // The device writes after what it took: its stamps run a day ahead.
      await device.users.put({ id: 'd1', name: 'Device write' })
      await device.sync.delta()
      await eventually(() => expect(server.users.get('d1')?.name).toBe('Device write'))
      expect(device.sync.status().deviceToServer.state).toBe('success')
      expect(server.events.query({ type: 'write-refused' })).toEqual([])
      // The server restarts, its clock right: it remembers where it stamped.
      const port = Number(new URL(server.url).port)
      await server.close()
      server = await createServer({
        dataDir: serverDir,
        siteKey: SITE_KEY,
        port,
        clock: offsetClock(offset),
      })
      await eventually(() => expect(device.sync.status().link).toBe('connected'), 30_000)
      await device.users.put({ id: 'd2', name: 'After the restart' })
      await device.sync.delta()
      await eventually(() => expect(server.users.get('d2')?.name).toBe('After the restart'))
      expect(server.events.query({ type: 'write-refused' })).toEqual([])
    } finally {
      await device.close()
      await server.close()
    }
  }, 60_000)
})

describe("a device's horizon", () => {
  it("moves with its server's stamps no further than the server takes (review: no ratchet)", async () => {
    // A hostile device fills a field with a stamp near the server's bound;
    // the server adopts it, stamping its record after it. Devices judge
    // stamps from their server's latest one: taken raw, the next device's
    // bound would lie an hour past the server's, and a LAN stamp it took
    // there would have its own writes refused by the server.
    const base = new ManualClock(Date.UTC(2026, 5, 1))
    const near = limits.stampSkewMsMax - 60_000
    const server = await createServer({
      store: memoryStore(),
      clock: base,
      listen: false,
      open: true,
    })
    const hostile = await createDevice({
      id: 'H',
      store: memoryStore(),
      clock: skewedClock(base, near),
    })
    const other = await createDevice({ id: 'B', store: memoryStore(), clock: base })
    const links = [link(server.replica, hostile.replica), link(server.replica, other.replica)]
    try {
      await server.users.put({ id: 'u1', name: 'Ann' })
      for (const l of links) await l.settled()
      await hostile.users.patch('u1', { email: 'h@example.com' })
      for (let round = 0; round < 4; round++) for (const l of links) await l.settled()
      expect(server.users.get('u1')?.email).toBe('h@example.com')
      expect(stampMs(server.replica.hlcPeek())).toBeGreaterThanOrEqual(base.now() + near)
      expect(other.users.get('u1')?.email).toBe('h@example.com')
      // The server takes stamps up to its clock + the skew; the device no further.
      const serverBound = server.replica.stampTime.horizon() + limits.stampSkewMsMax
      const deviceBound = other.replica.stampTime.horizon() + limits.stampSkewMsMax
      expect(serverBound).toBe(base.now() + limits.stampSkewMsMax)
      expect(deviceBound).toBeLessThanOrEqual(serverBound + limits.stampHorizonSlackMs)
    } finally {
      for (const l of links) l.close()
      await hostile.close()
      await other.close()
      await server.close()
    }
  })
})
