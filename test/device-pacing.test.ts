/**
 * A device tells its links of its own changes at most once per
 * `netLimits.deviceAnnounceIntervalMs`, what it wrote meanwhile merged: a
 * black-box probe enrolled users on a live device back to back (900 writes
 * a second, one message each) and its own server refused the link past
 * `linkMessagesPerSecondMax` (`RATE_LIMITED`; a full sync under way failed
 * with it). Here the bounds are scaled down so that a few hundred writes
 * cross them however fast the machine is.
 *
 * Real parts: a server on LevelDB and a live device over WebSocket on
 * 127.0.0.1, both on the real clock.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { netLimits } from '../core/limits.js'
import { createDevice } from '../peers/create-device.js'
import { createServer } from '../server-peer/create-server.js'
import { withLimits } from './helpers/limits.js'

const SITE_KEY = 'device-pacing-site-key'
let dir = ''
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rostersync-pacing-'))
})
afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

describe("a device's own writes back to back", () => {
  it("stay within its server's message rate: merged, never refused", async () => {
    // 20 messages a second (40 at once) at the server; a device tells 5 at once a second, then 10 merged.
    withLimits(netLimits, {
      linkMessagesPerSecondMax: 20,
      linkMessagesBurstMax: 40,
      deviceAnnounceIntervalMs: 100,
      deviceAnnounceFreePerSecond: 5,
    })
    const server = await createServer({ dataDir: join(dir, 'server'), siteKey: SITE_KEY })
    const device = await createDevice({
      id: 'D1',
      dataDir: join(dir, 'D1'),
      server: server.url,
      siteKey: SITE_KEY,
      mode: 'live',
    })
    try {
      await device.sync.whenReady()
      const WRITES = 300
      for (let i = 0; i < WRITES; i++) await device.users.put({ id: `u${i}`, name: `User ${i}` })
      await device.sync.whenIdle()
      expect(server.users.list()).toHaveLength(WRITES)
      expect(server.events.query({ type: 'write-refused' })).toEqual([])
      expect(device.sync.status().deviceToServer.state).toBe('success')
    } finally {
      await device.close()
      await server.close()
    }
  }, 60_000)
})
