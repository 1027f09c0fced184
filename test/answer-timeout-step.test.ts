/**
 * A device's wait for its server's answer is bounded in time waited, not in
 * what its clock reads: a clock set back by a day while an exchange waited
 * (a wrong real-time clock corrected) made the bound a day longer, and the
 * sync stayed `in-progress` that long. Found by the simulator (seed 9223 of
 * the bench's site, a clock step: the round hung past the convergence
 * bound, its connection's hello lost).
 *
 * The server's messages to the device stop (lost) once the device is
 * ready; the device's wall clock is the test's clock plus an offset the
 * test sets back, while timers run on the test's clock.
 */
import { afterEach, describe, expect, it } from 'vitest'
import type { Clock } from '../core/clock.js'
import { netLimits } from '../core/limits.js'
import type { Transport } from '../core/transport.js'
import { createDevice } from '../peers/create-device.js'
import { createServer } from '../server-peer/create-server.js'
import { memoryStore } from '../storage/level-store.js'
import { memoryPair } from '../transports/memory-transport.js'
import { ManualClock, settle } from './helpers/manual-clock.js'
import { wrapConnection } from './helpers/wrapped-connection.js'

const SITE_KEY = 'answer-timeout-step-key'
const DAY = 86_400_000
const closers: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close()
})

describe("a device's wait for an answer", () => {
  it('ends after syncAnswerTimeoutMs of waiting, though its clock was set back a day meanwhile', async () => {
    const base = new ManualClock()
    let offsetMs = 0
    const wall: Clock = {
      now: () => base.now() + offsetMs,
      setTimeout: (fn, ms) => base.setTimeout(fn, ms),
      clearTimeout: (handle) => base.clearTimeout(handle),
    }
    const server = await createServer({
      store: memoryStore(),
      clock: base,
      listen: false,
      siteKey: SITE_KEY,
    })
    closers.push(() => server.close())
    await server.users.put({ id: 'u1', name: 'Ann' })
    let lost = false
    const transport: Transport = {
      connect: async (url) => {
        const [mine, theirs] = memoryPair('device', 'server')
        server.accept(theirs, url)
        return wrapConnection(mine, {
          onMessage: (handler) =>
            mine.onMessage((m) => {
              if (!lost) handler(m)
            }),
        })
      },
      close: async () => undefined,
    }
    const device = await createDevice({
      id: 'D1',
      store: memoryStore(),
      clock: wall,
      server: 'ws://memory-server',
      serverTransport: transport,
      siteKey: SITE_KEY,
    })
    closers.push(() => device.close())
    await device.sync.whenReady()
    lost = true
    let outcome: string | undefined
    device.sync.delta().then(
      () => (outcome = 'resolved'),
      (error: { code?: string }) => (outcome = error.code ?? 'rejected'),
    )
    await base.advance(1_000)
    offsetMs = -DAY // the clock set back while the exchange waits
    for (let waited = 0; waited <= netLimits.syncAnswerTimeoutMs && outcome === undefined;) {
      await base.advance(5_000)
      waited += 5_000
    }
    await settle()
    expect(outcome).toBe('SYNC_TIMEOUT')
  })
})
