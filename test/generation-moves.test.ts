/**
 * The server's cap on devices fetching a new generation at once
 * (server-peer/generation-moves.ts, `netLimits.generationMovesInFlightMax`):
 * - past the cap a device link is closed at admission with 1013
 *   `TOO_MANY_MOVES`, before anything is sent on it; a place is freed when
 *   the answer to the device's step 1 ends (the whole roster, or a few
 *   bytes for a device on the new generation already), or when the link
 *   closes; a device seen on the new generation is never held back again;
 * - only devices registered before the switch take places, and only once
 *   their join is proven: a device new since the switch, or a join that
 *   fails its key check, never holds one; an id whose link held a place
 *   and sent no step 1 takes none again in the window;
 * - a real device refused so comes back after its usual backoff and moves.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { generationMoveDelayMs } from '../core/backoff.js'
import { netLimits } from '../core/limits.js'
import { CloseCode, encodeMessage } from '../core/protocol.js'
import type { Connection } from '../core/transport.js'
import { MoveGate } from '../server-peer/generation-moves.js'
import { createDevice } from '../peers/create-device.js'
import { createServer, type ServerPeer } from '../server-peer/create-server.js'
import { memoryStore } from '../storage/level-store.js'
import { eventually } from './helpers/eventually.js'
import { withLimits } from './helpers/limits.js'
import { ManualClock, settle } from './helpers/manual-clock.js'
import { rawLink, type RawLink } from './helpers/raw-link.js'

const SITE_KEY = 'generation-moves-site-key'
let dir = ''
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rostersync-moves-'))
})
afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

/** The bounds as they are outside the tests. */
const saved = { ...netLimits }

const EMPTY_VECTOR = Y.encodeStateVector(new Y.Doc())

/** Devices `ids` registered (each joined once and left), as before a switch. */
async function register(server: ServerPeer, ids: readonly string[]): Promise<void> {
  const links = ids.map((id) => rawLink(server, id, SITE_KEY))
  await settle()
  for (const link of links) link.connection.close(1000, 'registered')
  await settle()
}

/** A server that switched generation, with `registered` known from before (its clock steps 1 ms around the switch). */
async function switchedServer(
  registered: readonly string[] = [],
  clock = new ManualClock(Date.now()),
): Promise<ServerPeer> {
  const server = await createServer({
    store: memoryStore(),
    siteKey: SITE_KEY,
    listen: false,
    clock,
  })
  for (let i = 0; i < 20; i++) await server.users.put({ id: `u${i}`, name: `User ${i}` })
  await register(server, registered)
  await clock.advance(1)
  await server.compactHistory()
  await clock.advance(1)
  return server
}

const refusedAtDoor = (link: RawLink): boolean =>
  link.closed()?.code === CloseCode.tryAgainLater &&
  (link.closed()?.reason ?? '').startsWith('TOO_MANY_MOVES') &&
  link.received.length === 0

describe('the cap on devices fetching a new generation', () => {
  it('refuses past it at the door, and frees a place as each move ends', async () => {
    withLimits(netLimits, { generationMovesInFlightMax: 2 })
    const server = await switchedServer([
      'dev-a',
      'dev-b',
      'dev-c',
      'dev-d',
      'dev-e',
      'dev-f',
      'dev-g',
    ])
    try {
      const a = rawLink(server, 'dev-a', SITE_KEY)
      const b = rawLink(server, 'dev-b', SITE_KEY)
      const c = rawLink(server, 'dev-c', SITE_KEY)
      await settle()
      expect(a.closed()).toBeUndefined()
      expect(b.closed()).toBeUndefined()
      expect(refusedAtDoor(c)).toBe(true)
      // A fetches the new generation whole: its place is freed once the
      // answer's last part (the step 2) is handed to its link.
      a.send({ type: 'sync-step1', stateVector: EMPTY_VECTOR })
      await eventually(() => expect(a.received.some((m) => m.type === 'sync-step2')).toBe(true))
      const d = rawLink(server, 'dev-d', SITE_KEY)
      await settle()
      expect(d.closed()).toBeUndefined()
      // Full again (B and D): E is refused; B's link closing frees B's place.
      const e = rawLink(server, 'dev-e', SITE_KEY)
      await settle()
      expect(refusedAtDoor(e)).toBe(true)
      b.connection.close(1000, 'gone')
      await settle()
      const f = rawLink(server, 'dev-f', SITE_KEY)
      await settle()
      expect(f.closed()).toBeUndefined()
      // Full (D and F). A moved: it comes back without taking a place.
      a.connection.close(1000, 'bye')
      await settle()
      const again = rawLink(server, 'dev-a', SITE_KEY)
      await settle()
      expect(again.closed()).toBeUndefined()
      // A step 1 that holds the new generation: a small answer, the place freed.
      const holds = Y.encodeStateVector(server.replica.doc)
      f.send({ type: 'sync-step1', stateVector: holds })
      await settle()
      const g = rawLink(server, 'dev-g', SITE_KEY)
      await settle()
      expect(g.closed()).toBeUndefined()
    } finally {
      await server.close()
    }
  })

  it('holds no device back on a site that never started a generation', async () => {
    withLimits(netLimits, { generationMovesInFlightMax: 0 })
    const server = await createServer({ store: memoryStore(), siteKey: SITE_KEY, listen: false })
    try {
      await server.users.put({ id: 'u', name: 'U' })
      const a = rawLink(server, 'dev-a', SITE_KEY)
      await settle()
      expect(a.closed()).toBeUndefined()
    } finally {
      await server.close()
    }
  })

  it('a device refused comes back after its backoff and moves', async () => {
    const server = await createServer({ dataDir: join(dir, 'server'), siteKey: SITE_KEY })
    // The server's time (its join proofs are checked against its clock).
    const clock = new ManualClock(Date.now())
    const device = await createDevice({
      id: 'mover',
      dataDir: join(dir, 'mover'),
      siteKey: SITE_KEY,
      server: server.url,
      clock,
    })
    try {
      await server.users.put({ id: 'x', name: 'X' })
      await device.sync.whenReady()
      withLimits(netLimits, { generationMovesInFlightMax: 0 })
      await server.compactHistory()
      await eventually(() => expect(device.sync.status().link).not.toBe('connected'))
      // Its spread delay: it comes back and is refused at the door.
      await clock.advance(generationMoveDelayMs('mover') + 1)
      await eventually(() => expect(device.sync.status().waiting).toMatch(/^1013: TOO_MANY_MOVES/))
      // It waits its backoff (the usual one, as for any refusal to retry).
      const next = device.sync.status().nextAttemptAt ?? Infinity
      expect(next - clock.now()).toBeLessThanOrEqual(netLimits.retryDelayMsMax)
      await settle(20)
      expect(device.events.query({ type: 'generation-moved' })).toHaveLength(0)
      // Room again: after its usual backoff it moves.
      withLimits(netLimits, { generationMovesInFlightMax: saved.generationMovesInFlightMax })
      await clock.advance(netLimits.retryDelayMsMax)
      await eventually(() =>
        expect(device.events.query({ type: 'generation-moved' })).toHaveLength(1),
      )
      expect(device.users.get('x')?.name).toBe('X')
    } finally {
      await device.close()
      await server.close()
    }
  })
  it('closes a link that holds a place and sends no step 1, and gives its place to the next', async () => {
    withLimits(netLimits, { generationMovesInFlightMax: 1 })
    const clock = new ManualClock(Date.now())
    const server = await switchedServer(['dev-idle', 'dev-b', 'dev-c'], clock)
    try {
      const idle = rawLink(server, 'dev-idle', SITE_KEY)
      await settle()
      expect(idle.closed()).toBeUndefined()
      const refused = rawLink(server, 'dev-b', SITE_KEY)
      await settle()
      expect(refusedAtDoor(refused)).toBe(true)
      await clock.advance(netLimits.generationMoveStep1WaitMs - 1)
      expect(idle.closed()).toBeUndefined()
      await clock.advance(1)
      expect(idle.closed()?.code).toBe(CloseCode.tryAgainLater)
      expect(idle.closed()?.reason).toMatch(/^TOO_MANY_MOVES: no step 1/)
      const next = rawLink(server, 'dev-c', SITE_KEY)
      await settle()
      expect(next.closed()).toBeUndefined()
      // One that sends its step 1 in time keeps its link past the wait.
      next.send({ type: 'sync-step1', stateVector: EMPTY_VECTOR })
      await clock.advance(netLimits.generationMoveStep1WaitMs)
      expect(next.closed()).toBeUndefined()
      await eventually(() => expect(next.received.some((m) => m.type === 'sync-step2')).toBe(true))
      // The id that idled takes no place again in the window, even free...
      const back = rawLink(server, 'dev-idle', SITE_KEY)
      await settle()
      expect(refusedAtDoor(back)).toBe(true)
      expect(back.closed()?.reason).toMatch(/held a place and sent no step 1/)
      // ...while another device takes the free place.
      const other = rawLink(server, 'dev-b', SITE_KEY)
      await settle()
      expect(other.closed()).toBeUndefined()
      other.connection.close(1000, 'bye')
      await settle()
      // Past the window it joins as any device.
      await clock.advance(2 * netLimits.generationMoveSpreadMs)
      const later = rawLink(server, 'dev-idle', SITE_KEY)
      await settle()
      expect(later.closed()).toBeUndefined()
    } finally {
      await server.close()
    }
  })

  it('lets the place of an answer not read within the wait go, counted against its device; the answer goes on and the device moves (a probe: 16 ids that never read held every place all window)', async () => {
    withLimits(netLimits, { generationMovesInFlightMax: 1 })
    const clock = new ManualClock(Date.now())
    const gate = new MoveGate({
      clock,
      generation: () => ({ n: 1, id: 'g1', at: clock.now() - 1 }),
      firstSeen: () => 0,
    })
    const sent: Uint8Array[] = []
    const fake = (
      id: string,
    ): { connection: Connection; receive: (m: Uint8Array) => void; closed: () => boolean } => {
      let handler: (m: Uint8Array) => void = () => undefined
      let closed = false
      const connection: Connection = {
        id,
        remote: id,
        open: true,
        send: (m) => sent.push(m),
        onMessage: (h) => (handler = h),
        onClose: () => undefined,
        close: () => (closed = true),
      }
      return { connection, receive: (m) => handler(m), closed: () => closed }
    }
    const slow = fake('slow')
    const wrapped = gate.admit(slow.connection, 'dev-slow')
    expect(wrapped).toBeDefined()
    wrapped?.onMessage(() => undefined)
    slow.receive(encodeMessage({ type: 'sync-step1', stateVector: EMPTY_VECTOR }))
    // Its answer is not handed (it does not read): the place is held for the wait...
    const early = fake('early')
    expect(gate.admit(early.connection, 'dev-early')).toBeUndefined()
    await clock.advance(netLimits.generationMoveStep1WaitMs)
    // ...then it goes to the next, the slow link left open.
    const next = fake('next')
    expect(gate.admit(next.connection, 'dev-next')).toBeDefined()
    expect(slow.closed()).toBe(false)
    // The slow device's answer ends: it moved (no place asked of it again).
    wrapped?.send(encodeMessage({ type: 'sync-step2', update: new Uint8Array([0, 0]) }))
    const again = fake('again')
    expect(gate.admit(again.connection, 'dev-slow')).toBe(again.connection)
  })

  it('holds no device back after a switch stamped ahead of a clock set back since (years probe)', async () => {
    const base = new ManualClock(Date.now())
    let aheadMs = 86_400_000
    const clock = {
      now: () => base.now() + aheadMs,
      setTimeout: (fn: () => void, ms: number) => base.setTimeout(fn, ms),
      clearTimeout: (handle: unknown) => base.clearTimeout(handle),
    }
    const server = await createServer({
      store: memoryStore(),
      siteKey: SITE_KEY,
      listen: false,
      clock,
    })
    try {
      await server.users.put({ id: 'u', name: 'U' })
      await register(server, ['dev-a'])
      await base.advance(1)
      await server.compactHistory()
      withLimits(netLimits, { generationMovesInFlightMax: 0 })
      // A day ahead, the window is on: held back.
      const during = rawLink(server, 'dev-a', SITE_KEY)
      await settle()
      expect(refusedAtDoor(during)).toBe(true)
      // Set right: the switch is a day ahead of the clock; the window would
      // last that day.
      aheadMs = 0
      const after = rawLink(server, 'dev-a', SITE_KEY)
      await settle()
      expect(after.closed()).toBeUndefined()
    } finally {
      await server.close()
    }
  })

  it("counts a device's time in places without a step 1 across its links (review)", async () => {
    // Closing before the wait ran out and joining again every 29 s held a
    // place all window; a device that crashed in its move must still move.
    withLimits(netLimits, { generationMovesInFlightMax: 1 })
    const clock = new ManualClock(Date.now())
    const server = await switchedServer(['dev-a', 'dev-b'], clock)
    try {
      const wait = netLimits.generationMoveStep1WaitMs
      const first = rawLink(server, 'dev-a', SITE_KEY)
      await settle()
      await clock.advance(wait - 10_000)
      first.connection.close(1000, 'gone before its step 1')
      await settle()
      // Back at once: admitted, with what is left of its wait.
      const second = rawLink(server, 'dev-a', SITE_KEY)
      await settle()
      expect(second.closed()).toBeUndefined()
      await clock.advance(10_000 - 1)
      expect(second.closed()).toBeUndefined()
      await clock.advance(1)
      expect(second.closed()?.reason).toMatch(/^TOO_MANY_MOVES: no step 1/)
      // Its wait is spent: no place again in the window, even free...
      const third = rawLink(server, 'dev-a', SITE_KEY)
      await settle()
      expect(refusedAtDoor(third)).toBe(true)
      expect(third.closed()?.reason).toMatch(/held a place and sent no step 1/)
      // ...which another device takes.
      const other = rawLink(server, 'dev-b', SITE_KEY)
      await settle()
      expect(other.closed()).toBeUndefined()
    } finally {
      await server.close()
    }
  })

  it('gives no place to a device new since the switch, nor to a join refused at the door', async () => {
    withLimits(netLimits, { generationMovesInFlightMax: 1 })
    const server = await switchedServer(['dev-a', 'dev-b'])
    try {
      // Joins refused at the door (here a wrong site key) never reach the gate.
      const wrongKey = rawLink(server, 'dev-a', 'not-the-site-key')
      await settle()
      expect(wrongKey.closed()?.reason).not.toMatch(/TOO_MANY_MOVES/)
      // Devices first seen after the switch have nothing to move: they
      // join (and fetch, as any new device) without a place, however many.
      const fresh = Array.from({ length: 5 }, (_, i) => rawLink(server, `new-${i}`, SITE_KEY))
      await settle()
      for (const link of fresh) expect(link.closed()).toBeUndefined()
      // The one place is still free for a device that moves...
      const a = rawLink(server, 'dev-a', SITE_KEY)
      await settle()
      expect(a.closed()).toBeUndefined()
      // ...and held by it.
      const b = rawLink(server, 'dev-b', SITE_KEY)
      await settle()
      expect(refusedAtDoor(b)).toBe(true)
    } finally {
      await server.close()
    }
  })
})
