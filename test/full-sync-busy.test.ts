/**
 * A full sync while the device keeps taking writes (a black-box probe: a
 * periodic device enrolling in bursts had its `sync.full()` rejected
 * `SYNC_FAILED: wipe skipped` in 3 rounds of 10). The full sync pushes,
 * then clears and fetches only if nothing was written after the push; a
 * write after each push made it push again until it gave up. From the
 * second push on the device's own writes now wait (as they do while the
 * roster is fetched), so the full sync completes however the writes come,
 * and every write is kept on the device and reaches the server.
 * Over a real WebSocket on 127.0.0.1, LevelDB in a temp dir.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createDevice, type DevicePeer } from '../peers/create-device.js'
import { createServer, type ServerPeer } from '../server-peer/create-server.js'
import { eventually } from './helpers/eventually.js'

const SITE_KEY = 'full-sync-busy-site-key'
let dir = ''
let server: ServerPeer
let device: DevicePeer

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rostersync-full-busy-'))
  server = await createServer({ dataDir: join(dir, 'server'), siteKey: SITE_KEY })
  for (let i = 0; i < 300; i += 100)
    await Promise.all(
      Array.from({ length: 100 }, (_, j) =>
        server.users.put({ id: `u${i + j}`, name: `U${i + j}` }),
      ),
    )
  device = await createDevice({
    id: 'P1',
    dataDir: join(dir, 'P1'),
    server: server.url,
    siteKey: SITE_KEY,
    mode: 'periodic',
    deltaIntervalMs: 3_600_000,
  })
  await eventually(() => expect(device.sync.status().offlineReady).toBe(true), 20_000)
})
afterAll(async () => {
  await device?.close()
  await server?.close()
  await rm(dir, { recursive: true, force: true })
})

describe('a full sync on a device taking writes all along', () => {
  it('completes every time, and keeps every write', async () => {
    const written: string[] = []
    for (let round = 0; round < 5; round++) {
      let done = false
      const full = device.sync.full().finally(() => (done = true))
      // Writes one after another for as long as the full sync runs: one
      // lands after every push.
      for (let k = 0; !done && k < 2_000; k++) {
        const id = `w${round}-${k}`
        await device.users.put({ id, name: `W ${id}` })
        written.push(id)
      }
      await expect(full).resolves.toBeUndefined()
    }
    expect(device.events.query({ type: 'sync-failed' })).toEqual([])
    for (const id of written) expect(device.users.get(id)?.name).toBe(`W ${id}`)
    await device.sync.delta()
    await eventually(() => {
      for (const id of written) expect(server.users.get(id)?.name).toBe(`W ${id}`)
    }, 20_000)
  }, 120_000)
})
