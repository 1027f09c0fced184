/**
 * A device paces its own step 1s under its server's bound on answered
 * step 1s (`netLimits.deviceStep1sPerSecondMax`): a caller that syncs
 * after every write (`whenIdle()` in a loop) waits, and is never closed
 * `RATE_LIMITED` (a probe: the 300th or so failed).
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { netLimits } from '../core/limits.js'
import { createDevice } from '../peers/create-device.js'
import { createServer } from '../server-peer/create-server.js'

const closers: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close().catch(() => undefined)
})

describe('a device syncing after every write', () => {
  it('is never refused RATE_LIMITED: it waits for its own pace', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'rostersync-pacing-'))
    closers.push(() => rm(dir, { recursive: true, force: true }))
    const server = await createServer({
      dataDir: join(dir, 'server'),
      port: 0,
      siteKey: 'pacing-site-key-0123456789',
    })
    closers.push(() => server.close())
    const device = await createDevice({
      id: 'D',
      dataDir: join(dir, 'D'),
      server: server.url,
      siteKey: 'pacing-site-key-0123456789',
    })
    closers.push(() => device.close())
    await device.sync.whenReady()
    // Past the server's burst of answered step 1s, at more than its rate
    // when nothing waits.
    const rounds = netLimits.step1AnswersBurstMax + 2 * netLimits.step1AnswersPerSecondMax
    for (let i = 0; i < rounds; i++) {
      await device.users.put({ id: `u${i}`, name: `User ${i}` })
      await device.sync.whenIdle()
    }
    expect(server.users.list()).toHaveLength(rounds)
    expect(device.sync.status().deviceToServer.state).toBe('success')
    expect(device.events.query({ type: 'sync-failed' })).toEqual([])
  }, 60_000)
})
