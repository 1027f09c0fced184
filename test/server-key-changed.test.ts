/**
 * A device that pinned its server's key, meeting a server with another key
 * at the same address (the server reinstalled with a new data dir, or
 * someone in between): it refuses the server, and says why with its own
 * code, `SERVER_KEY_CHANGED` (it surfaced as `AUTH_FAILED`, the code of a
 * device the server does not admit, whose cure is another).
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createDevice } from '../peers/create-device.js'
import { createServer } from '../server-peer/create-server.js'
import { eventually } from './helpers/eventually.js'

const SITE_KEY = 'server-key-changed-key'
let dir = ''
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rostersync-server-key-'))
})
afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

describe('a server with another key than the one the device pinned', () => {
  it('is refused by the device with SERVER_KEY_CHANGED, in the sync and in its status; nothing of it is taken', async () => {
    const first = await createServer({ dataDir: join(dir, 'first'), siteKey: SITE_KEY })
    await first.users.put({ id: 'u1', name: 'Ann' })
    const port = Number(new URL(first.url).port)
    const device = await createDevice({
      id: 'D1',
      dataDir: join(dir, 'device'),
      server: first.url,
      siteKey: SITE_KEY,
    })
    let second: Awaited<ReturnType<typeof createServer>> | undefined
    try {
      await device.sync.full()
      await first.close()
      second = await createServer({ dataDir: join(dir, 'second'), siteKey: SITE_KEY, port })
      await second.users.put({ id: 'u2', name: 'Impostor' })
      await expect(device.sync.full()).rejects.toMatchObject({
        code: 'SERVER_KEY_CHANGED',
        message: expect.stringMatching(/another key than the one this device pinned/) as unknown,
      })
      await eventually(() =>
        expect(device.sync.status().serverToDevice.error?.code).toBe('SERVER_KEY_CHANGED'),
      )
      // The status says why too (its message was lost in the copy handed out).
      expect(device.sync.status().serverToDevice.error?.message).toMatch(/SERVER_KEY_CHANGED/)
      expect(device.sync.status().link).toBe('refused')
      expect(device.users.get('u2')).toBeUndefined()
      expect(device.users.get('u1')?.name).toBe('Ann')
    } finally {
      await device.close()
      await second?.close()
    }
  }, 60_000)
})
