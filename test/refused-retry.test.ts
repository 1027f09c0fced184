/**
 * A device the server refused for good retries when asked by hand
 * (SEMANTICS.md: a failed sync "can be retried by hand"). A probe: a server
 * restarted by mistake with another site key refused a device
 * `AUTH_FAILED`; restarted with the right key, the device's `sync.full()`
 * and `whenIdle()` still rejected at once with the old refusal, never
 * connecting, until the app re-created the device. It does not retry by
 * itself (a refusal is final for its backoff), only by hand.
 *
 * Real parts: LevelDB, WebSocket on 127.0.0.1.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createDevice, type DevicePeer } from '../peers/create-device.js'
import { createServer, type ServerPeer } from '../server-peer/create-server.js'
import { eventually } from './helpers/eventually.js'

const RIGHT = 'refused-retry-right-key-0123'
const WRONG = 'refused-retry-wrong-key-4567'
let dir = ''
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rostersync-refused-retry-'))
})
afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

/**
 * A device that synced with its server, then was refused `AUTH_FAILED` by
 * the same data directory and port started by mistake with another key
 * (that server closed again).
 */
async function refusedDevice(
  id: string,
): Promise<{ dataDir: string; port: number; device: DevicePeer }> {
  const dataDir = join(dir, `server-${id}`)
  const first = await createServer({ dataDir, siteKey: RIGHT })
  const port = Number(new URL(first.url).port)
  const device = await createDevice({
    id,
    dataDir: join(dir, id),
    server: first.url,
    siteKey: RIGHT,
  })
  await device.sync.whenReady()
  await first.close()
  const wrong = await createServer({ dataDir, port, siteKey: WRONG })
  await expect(device.sync.whenIdle()).rejects.toMatchObject({ code: 'AUTH_FAILED' })
  expect(device.sync.status().deviceToServer.error?.code).toBe('AUTH_FAILED')
  await wrong.close()
  return { dataDir, port, device }
}

describe('a device refused for good', () => {
  it('connects again on a sync asked for by hand, and syncs once the server takes it back', async () => {
    const { dataDir, port, device } = await refusedDevice('D1')
    let server: ServerPeer | undefined
    try {
      // Tried by hand while the server is down: refused as before, and no
      // retries of its own start (a review: they did, after one such try).
      await expect(device.sync.full()).rejects.toMatchObject({ code: 'AUTH_FAILED' })
      await expect(device.sync.whenIdle()).rejects.toMatchObject({ code: 'AUTH_FAILED' })
      server = await createServer({ dataDir, port, siteKey: RIGHT })
      const seen = server.devices.list().find((d) => d.id === 'D1')?.lastSeen
      await new Promise((resolve) => setTimeout(resolve, 3_000))
      expect(server.devices.list().find((d) => d.id === 'D1')?.lastSeen).toBe(seen)
      expect(device.sync.status().deviceToServer.state).toBe('failed')
      await device.users.put({ id: 'u1', name: 'Ann' })
      // By hand: it connects, and the server takes it back.
      await device.sync.full()
      expect(server.users.get('u1')?.name).toBe('Ann')
      expect(device.sync.status().deviceToServer.state).toBe('success')
      await device.users.patch('u1', { email: 'ann@example.com' })
      await device.sync.whenIdle()
      expect(server.users.get('u1')?.email).toBe('ann@example.com')
    } finally {
      await device.close()
      await server?.close()
    }
  }, 60_000)

  it('takes a coded answer to a try by hand its usual way: PEER_PENDING waits with the backoff, and comes in once approved (a review)', async () => {
    const { dataDir, port, device } = await refusedDevice('D2')
    // Back with the right key, the device's key reset: it must wait for approval.
    const server = await createServer({ dataDir, port, siteKey: RIGHT, approveDevices: true })
    try {
      await server.devices.resetKey('D2')
      await expect(device.sync.full()).rejects.toMatchObject({ code: 'PEER_PENDING' })
      expect(device.sync.status().deviceToServer.error?.code).toBe('PEER_PENDING')
      // Approved: it comes in by itself, on its backoff.
      await eventually(() =>
        expect(server.devices.list().find((d) => d.id === 'D2')?.keyFingerprint).toBe(
          device.keyFingerprint,
        ),
      )
      await server.devices.approve('D2')
      await device.users.put({ id: 'u2', name: 'Bo' })
      await eventually(() => expect(server.users.get('u2')?.name).toBe('Bo'), 30_000)
    } finally {
      await device.close()
      await server.close()
    }
  }, 60_000)
})
