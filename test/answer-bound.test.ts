/**
 * How long a device's exchange with the server may wait for its answer
 * (ServerExchange.answer): `netLimits.syncAnswerTimeoutMs`, plus
 * `netLimits.syncAnswerMsPerOperation` for each operation the answer
 * brings, as the server's step 1 states it (`SyncSession.answerSize`).
 * A large answer on a slow link took longer than the fixed bound, the full
 * sync failed, and each retry fetched the whole roster again and failed
 * again, for ever (issue 13, the aging bench). A small answer keeps the
 * fixed bound.
 *
 * The server's answer comes in small parts (`answerChunkBytesMax`
 * lowered); the test hands the device the server's messages itself, on a
 * manual clock, never leaving it silent for `syncAskAgainSilenceMs` (no
 * step 1 goes again).
 */
import { afterEach, expect, it } from 'vitest'
import { netLimits } from '../core/limits.js'
import type { Transport } from '../core/transport.js'
import { createDevice, type DevicePeer } from '../peers/create-device.js'
import { createServer, type ServerPeer } from '../server-peer/create-server.js'
import { memoryStore } from '../storage/level-store.js'
import { memoryPair } from '../transports/memory-transport.js'
import { ManualClock, settle } from './helpers/manual-clock.js'
import { operationsOf } from './helpers/operations.js'
import { wrapConnection } from './helpers/wrapped-connection.js'

const SITE_KEY = 'answer-bound-site-key'
const USERS = 3_000
/** Time between two messages handed over: under the ask-again silence. */
const STEP_MS = Math.floor(netLimits.syncAskAgainSilenceMs / 2)
const closers: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close()
})

/** A server whose answers go in parts of about 4 KB, holding USERS users. */
async function server(clock: ManualClock): Promise<ServerPeer> {
  const s = await createServer({
    store: memoryStore(),
    clock,
    listen: false,
    siteKey: SITE_KEY,
    answerChunkBytesMax: 4 * 1024,
  })
  closers.push(() => s.close())
  await Promise.all(
    Array.from({ length: USERS }, (_, i) =>
      s.users.put({ id: `u${i}`, name: `User ${i} ${'x'.repeat(80)}`, email: `u${i}@x.example` }),
    ),
  )
  return s
}

/** A transport to `s` whose server-to-device messages wait in `queue` until the test hands them over. */
function heldTransport(s: ServerPeer, queue: Array<() => void>): Transport {
  return {
    connect: async (url) => {
      const [mine, theirs] = memoryPair('device', 'server')
      s.accept(theirs, url)
      return wrapConnection(mine, {
        onMessage: (handler) => mine.onMessage((m) => queue.push(() => handler(m))),
      })
    },
    close: async () => undefined,
  }
}

async function device(clock: ManualClock, transport: Transport): Promise<DevicePeer> {
  const d = await createDevice({
    id: 'D1',
    store: memoryStore(),
    clock,
    server: 'ws://sim-server',
    serverTransport: transport,
    siteKey: SITE_KEY,
  })
  closers.push(() => d.close())
  return d
}

it('a large answer arriving for longer than the fixed bound completes, within its allowance', async () => {
  const clock = new ManualClock()
  const s = await server(clock)
  const allowanceMs = operationsOf(s.replica.doc) * netLimits.syncAnswerMsPerOperation
  // The premise: an allowance worth testing (a second or more).
  expect(allowanceMs).toBeGreaterThanOrEqual(1_000)
  const queue: Array<() => void> = []
  const d = await device(clock, heldTransport(s, queue))
  let ready = false
  void d.sync.whenReady().then(
    () => (ready = true),
    () => undefined,
  )
  // One message per step, the clock moving a step between two, until the
  // answer has taken the fixed bound and half the allowance; then the rest.
  const started = clock.now()
  const slowFor = netLimits.syncAnswerTimeoutMs + allowanceMs / 2
  let handed = 0
  while (!ready && clock.now() - started < slowFor) {
    await settle()
    const next = queue.shift()
    if (next !== undefined) {
      next()
      handed++
    }
    await clock.advance(Math.min(STEP_MS, slowFor - (clock.now() - started)))
  }
  await settle()
  // The premise: the answer was still arriving when the fixed bound passed.
  expect(ready).toBe(false)
  expect(queue.length).toBeGreaterThan(0)
  for (let step = 0; !ready && step < 1_000; step++) {
    await settle()
    for (const next of queue.splice(0)) next()
  }
  expect(ready).toBe(true)
  expect(handed).toBeGreaterThanOrEqual(netLimits.syncAnswerTimeoutMs / STEP_MS)
  expect(d.events.query({ type: 'sync-failed' })).toEqual([])
  expect(d.users.list()).toHaveLength(USERS)
  expect(d.users.list()).toEqual(s.users.list())
})

it('an answer that stops arriving fails once the fixed bound and its allowance pass', async () => {
  const clock = new ManualClock()
  const s = await server(clock)
  const allowanceMs = operationsOf(s.replica.doc) * netLimits.syncAnswerMsPerOperation
  const queue: Array<() => void> = []
  const d = await device(clock, heldTransport(s, queue))
  let outcome: unknown
  void d.sync.whenReady().then(
    () => (outcome = 'ready'),
    (error: unknown) => (outcome = error),
  )
  // The hello and the server's step 1 (which states the answer's size),
  // then nothing more of the server's.
  let handed = 0
  for (let step = 0; step < 50 && handed < 2; step++) {
    await settle()
    const next = queue.shift()
    if (next === undefined) continue
    next()
    handed++
  }
  expect(handed).toBe(2)
  const started = clock.now()
  // Nothing ends the wait before the bound and the allowance pass (the
  // device asks again on the silent connection meanwhile; its answers are
  // never handed over).
  await clock.advance(netLimits.syncAnswerTimeoutMs + allowanceMs - 1_000)
  await settle()
  expect(d.events.query({ type: 'sync-failed' })).toEqual([])
  await clock.advance(2_000)
  await settle(20)
  expect(clock.now() - started).toBeGreaterThan(netLimits.syncAnswerTimeoutMs)
  const failed = d.events.query({ type: 'sync-failed' })
  expect(failed.length).toBeGreaterThan(0)
  expect(JSON.stringify(failed[0])).toMatch(/SYNC_TIMEOUT|did not answer in time/)
  expect(outcome).not.toBe('ready')
})
