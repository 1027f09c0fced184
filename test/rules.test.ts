/**
 * The rules of SEMANTICS.md, one case from the field at a time: real server
 * and device peers on in-memory stores, joined by in-memory links that the
 * test opens and closes to model "the server is unreachable". A fake clock
 * the test moves by hand drives every timer; each device reads its own wall
 * clock off it, minutes ahead of the server's or behind it (issue 12), and
 * every test runs both ways round. Which write wins is then decided by what
 * each writer had seen (the hybrid logical clock), and, between writes
 * neither of which saw the other, by their stamps.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as Y from 'yjs'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { Clock } from '../core/clock.js'
import type { FieldPolicy, ServerEntry } from '../core/entries.js'
import type { RosterEvent } from '../core/events.js'
import { asUserId } from '../core/ids.js'
import { createDevice, type DevicePeer } from '../peers/create-device.js'
import { link, type MemoryLink } from '../peers/memory-link.js'
import { createServer, type ServerPeer } from '../server-peer/create-server.js'
import { memoryStore } from '../storage/level-store.js'
import { KeptOpenStore } from './helpers/forwarding-store.js'
import { DEVICE_SKEWS, offsetOf, skewedClock, type Skew } from './helpers/skewed-clock.js'

/** A clock that only moves when the test says so. */
interface FakeClock extends Clock {
  advance(ms: number): void
}

function fakeClock(startMs = Date.UTC(2024, 0, 1)): FakeClock {
  let now = startMs
  const timers = new Map<number, { at: number; fn: () => void }>()
  let nextHandle = 1
  return {
    now: () => now,
    setTimeout(fn, ms) {
      const handle = nextHandle++
      timers.set(handle, { at: now + ms, fn })
      return handle
    },
    clearTimeout(handle) {
      timers.delete(handle as number)
    },
    advance(ms) {
      now += ms
      for (const [handle, timer] of [...timers].sort((a, b) => a[1].at - b[1].at)) {
        if (timer.at > now) continue
        timers.delete(handle)
        timer.fn()
      }
    },
  }
}

type Peer = ServerPeer | DevicePeer

let opened: Peer[] = []
let links: MemoryLink[] = []
let dirs: string[] = []

afterEach(async () => {
  for (const l of links) l.close()
  for (const peer of opened) await peer.close()
  for (const dir of dirs) await rm(dir, { recursive: true, force: true })
  opened = []
  links = []
  dirs = []
})

async function newServer(
  clock: Clock,
  options: { fieldPolicies?: Record<string, FieldPolicy>; dataDir?: string } = {},
): Promise<ServerPeer> {
  const server = await createServer({
    clock,
    ...(options.dataDir === undefined ? { store: memoryStore() } : { dataDir: options.dataDir }),
    ...(options.fieldPolicies === undefined ? {} : { fieldPolicies: options.fieldPolicies }),
  })
  opened.push(server)
  return server
}

/** The skew of the test running (set per `describe.each` round). */
let skew: Skew = { name: 'none', offsetsMs: {} }

/** A device on its own wall clock: `clock` skewed by the round's offset for `id`. */
async function newDevice(
  id: string,
  clock: Clock,
  offsetMs = offsetOf(skew, id),
): Promise<DevicePeer> {
  const device = await createDevice({
    id,
    store: memoryStore(),
    clock: skewedClock(clock, offsetMs),
  })
  opened.push(device)
  return device
}

/** Links two peers and waits for the initial exchange. */
async function connect(a: Peer, b: Peer): Promise<MemoryLink> {
  const l = link(a.replica, b.replica)
  links.push(l)
  await l.settled()
  return l
}

/** Waits until every open link is idle; relays (a → b → c) need a few rounds. */
async function settle(): Promise<void> {
  for (let round = 0; round < 4; round++) {
    for (const l of links) await l.settled()
  }
}

/** Closes a link after letting what is in flight arrive. */
async function disconnect(l: MemoryLink): Promise<void> {
  await l.settled()
  l.close()
  links = links.filter((other) => other !== l)
}

/**
 * A gap longer than any skew of DEVICE_SKEWS: of two writes neither of which
 * saw the other, the one made this long after the other stamps later,
 * whichever way the clocks are off.
 */
const GAP_MS = 10 * 60_000

const serverEntry = (server: ServerPeer, id: string): ServerEntry | undefined =>
  server.replica.replicaOf(asUserId(id)).server

/** The `user-update-succeeded` events with origin device, as [deviceId, sorted fields]. */
function adoptions(server: ServerPeer, userId: string): Array<[string | undefined, string[]]> {
  // One adoption may credit several devices; their order within it is not specified.
  return server.events
    .query({ type: 'user-update-succeeded', userId })
    .filter((e) => e.origin === 'device')
    .map((e): [string | undefined, string[]] => [e.deviceId, [...(e.fields ?? [])].sort()])
    .sort((x, y) => x[0]?.localeCompare(y[0] ?? '') ?? 0)
}

/** A server holding u1 (named `name`), and dev-a and dev-b that synced it, then went offline. */
async function offlinePair(
  clock: Clock,
  name: string,
): Promise<{ server: ServerPeer; a: DevicePeer; b: DevicePeer }> {
  const server = await newServer(clock)
  await server.users.put({ id: 'u1', name })
  const a = await newDevice('dev-a', clock)
  const b = await newDevice('dev-b', clock)
  for (const l of [await connect(server, a), await connect(server, b)]) await disconnect(l)
  return { server, a, b }
}

const overrides = (device: DevicePeer, userId: string): RosterEvent[] =>
  device.events.query({ type: 'edit-overridden-by-server', userId })

describe.each(DEVICE_SKEWS)('$name', (round) => {
  beforeEach(() => {
    skew = round
  })

  describe('rule 2: a device enrols a user the server lacks', () => {
    it('the server adopts the user and logs user-update-succeeded with origin device', async () => {
      const clock = fakeClock()
      const server = await newServer(clock)
      const a = await newDevice('dev-a', clock)
      const b = await newDevice('dev-b', clock)
      await connect(server, a)
      await connect(server, b)

      await a.users.put({ id: 'u1', name: 'Ada Lovelace', email: 'ada@example.com' })
      await settle()

      const expected = { id: 'u1', name: 'Ada Lovelace', email: 'ada@example.com' }
      expect(server.users.get('u1')).toEqual(expected)
      expect(b.users.get('u1')).toEqual(expected)
      // Adopted means the server's own record holds the values now.
      expect(serverEntry(server, 'u1')?.f).toEqual({
        name: 'Ada Lovelace',
        email: 'ada@example.com',
      })
      expect(adoptions(server, 'u1')).toEqual([['dev-a', ['email', 'name']]])
    })
  })

  describe('rule 1: the server wins on conflict', () => {
    it('a device edit of a name the server has is overridden everywhere', async () => {
      const clock = fakeClock()
      const server = await newServer(clock)
      await server.users.put({ id: 'u1', name: 'Grace Hopper', department: 'Navy' })
      const a = await newDevice('dev-a', clock)
      const b = await newDevice('dev-b', clock)
      await connect(server, a)
      await connect(server, b)

      clock.advance(1_000)
      await a.users.patch('u1', { name: 'G. Hopper' })
      expect(a.users.get('u1')?.name).toBe('Grace Hopper')
      await settle()

      for (const peer of [server, a, b]) {
        expect(peer.users.get('u1')).toEqual({ id: 'u1', name: 'Grace Hopper', department: 'Navy' })
      }
      expect(serverEntry(server, 'u1')?.f?.name).toBe('Grace Hopper')
      expect(overrides(a, 'u1').map((e) => e.fields)).toEqual([['name']])
      expect(overrides(b, 'u1')).toEqual([])
      expect(adoptions(server, 'u1')).toEqual([])
    })
  })

  describe('rule 2: a device fills a vacant field', () => {
    it('the server adopts the fill, and a later device edit of it is overridden', async () => {
      const clock = fakeClock()
      const server = await newServer(clock)
      await server.users.put({ id: 'u1', name: 'Alan Turing' })
      const a = await newDevice('dev-a', clock)
      const b = await newDevice('dev-b', clock)
      await connect(server, a)
      await connect(server, b)

      clock.advance(1_000)
      await a.users.patch('u1', { email: 'alan@example.com' })
      await settle()
      expect(server.users.get('u1')?.email).toBe('alan@example.com')
      expect(b.users.get('u1')?.email).toBe('alan@example.com')
      expect(serverEntry(server, 'u1')?.f?.email).toBe('alan@example.com')
      expect(adoptions(server, 'u1')).toEqual([['dev-a', ['email']]])
      expect(overrides(a, 'u1')).toEqual([])

      // From now on the field is the server's: a later device edit loses.
      clock.advance(1_000)
      await b.users.patch('u1', { email: 'turing@example.org' })
      await settle()
      for (const peer of [server, a, b]) {
        expect(peer.users.get('u1')?.email).toBe('alan@example.com')
      }
      expect(overrides(b, 'u1').map((e) => e.fields)).toEqual([['email']])
      expect(adoptions(server, 'u1')).toEqual([['dev-a', ['email']]])
    })

    it.each([
      ['dev-a', 'dev-b'],
      ['dev-b', 'dev-a'],
    ])(
      'two devices fill the same vacant field offline: the later (%s then %s) wins on both, then at the server',
      async (first, second) => {
        const clock = fakeClock()
        const server = await newServer(clock)
        await server.users.put({ id: 'u1', name: 'Edsger Dijkstra' })
        const devices = new Map<string, DevicePeer>()
        for (const id of ['dev-a', 'dev-b']) devices.set(id, await newDevice(id, clock))
        const earlier = devices.get(first) as DevicePeer
        const later = devices.get(second) as DevicePeer
        const toServer = [await connect(server, earlier), await connect(server, later)]
        for (const l of toServer) await disconnect(l)

        clock.advance(1_000)
        await earlier.users.patch('u1', { phone: `+31 ${first}` })
        clock.advance(GAP_MS)
        await later.users.patch('u1', { phone: `+31 ${second}` })
        await connect(earlier, later)
        await settle()
        expect(earlier.users.get('u1')?.phone).toBe(`+31 ${second}`)
        expect(later.users.get('u1')?.phone).toBe(`+31 ${second}`)
        expect(server.users.get('u1')?.phone).toBeUndefined()

        // The server comes back, reachable through the earlier writer only.
        await connect(server, earlier)
        await settle()
        for (const peer of [server, earlier, later]) {
          expect(peer.users.get('u1')?.phone).toBe(`+31 ${second}`)
        }
        expect(serverEntry(server, 'u1')?.f?.phone).toBe(`+31 ${second}`)
        expect(adoptions(server, 'u1')).toEqual([[second, ['phone']]])
      },
    )

    it.each([
      ['dev-a', 'dev-b'],
      ['dev-b', 'dev-a'],
    ])(
      'two devices fill the same vacant field offline a second apart (%s then %s): the greater stamp wins, as the clocks say',
      async (first, second) => {
        const clock = fakeClock()
        const server = await newServer(clock)
        await server.users.put({ id: 'u1', name: 'Edsger Dijkstra' })
        const a = await newDevice('dev-a', clock)
        const b = await newDevice('dev-b', clock)
        for (const l of [await connect(server, a), await connect(server, b)]) await disconnect(l)
        const byId = new Map([
          ['dev-a', a],
          ['dev-b', b],
        ])
        clock.advance(1_000)
        await byId.get(first)?.users.patch('u1', { phone: `+31 ${first}` })
        clock.advance(1_000)
        await byId.get(second)?.users.patch('u1', { phone: `+31 ${second}` })
        const phoneStamp = (d: DevicePeer) =>
          d.replica.replicaOf(asUserId('u1')).devices.find(([w]) => w === d.id)?.[1].s.phone ?? 0
        // Neither saw the other: the stamps decide, and the clocks decide the
        // stamps. Ahead of the server, each device stamps its own wall time,
        // and dev-a's runs 4 minutes ahead of dev-b's. Behind it, neither
        // wall time reaches the server stamp both devices saw, so both stamp
        // just past it: equal stamps, and the greater id, dev-b, wins.
        const winner = offsetOf(skew, 'dev-a') > 0 ? 'dev-a' : 'dev-b'
        if (winner === 'dev-a') expect(phoneStamp(a)).toBeGreaterThan(phoneStamp(b))
        else expect(phoneStamp(a)).toBe(phoneStamp(b))
        await connect(a, b)
        await connect(server, a)
        await settle()
        for (const peer of [server, a, b]) expect(peer.users.get('u1')?.phone).toBe(`+31 ${winner}`)
        expect(adoptions(server, 'u1')).toEqual([[winner, ['phone']]])
      },
    )

    it('equal stamps: the greater device id wins, whatever the order of the writes', async () => {
      const clock = fakeClock()
      const server = await newServer(clock)
      await server.users.put({ id: 'u1', name: 'Barbara Liskov' })
      // Both devices on the same wall clock (this round's skew of dev-a).
      const a = await newDevice('dev-a', clock)
      const b = await newDevice('dev-b', clock, offsetOf(skew, 'dev-a'))
      for (const l of [await connect(server, a), await connect(server, b)]) await disconnect(l)

      // Same wall time, same history: both hybrid clocks issue the same stamp.
      clock.advance(1_000)
      await b.users.patch('u1', { title: 'from b' })
      await a.users.patch('u1', { title: 'from a' })
      const titleStamp = (device: DevicePeer) =>
        device.replica.replicaOf(asUserId('u1')).devices.find(([w]) => w === device.id)?.[1].s.title
      expect(titleStamp(a)).toBeGreaterThan(0)
      expect(titleStamp(a)).toBe(titleStamp(b))
      await connect(a, b)
      await settle()
      expect(a.users.get('u1')?.title).toBe('from b')
      await connect(a, server)
      await settle()
      for (const peer of [server, a, b]) expect(peer.users.get('u1')?.title).toBe('from b')
    })

    it.each([
      ['dev-a', 'dev-b'],
      ['dev-b', 'dev-a'],
    ])(
      'two devices fill the same vacant field offline: the later fill wins whichever reaches the server first (%s first)',
      async (firstBack) => {
        const clock = fakeClock()
        const { server, a, b } = await offlinePair(clock, 'Frances Allen')

        clock.advance(1_000)
        await a.users.patch('u1', { phone: 'earlier' })
        clock.advance(GAP_MS)
        await b.users.patch('u1', { phone: 'later' })
        // The devices stay away longer than any skew: both fills were made
        // before the server took the field, whatever the clocks say.
        clock.advance(GAP_MS)
        const [first, second] = firstBack === 'dev-a' ? [a, b] : [b, a]
        await connect(server, first)
        await settle()
        expect(serverEntry(server, 'u1')?.f?.phone).toBe(
          firstBack === 'dev-a' ? 'earlier' : 'later',
        )
        await connect(server, second)
        await settle()
        for (const peer of [server, a, b]) expect(peer.users.get('u1')?.phone).toBe('later')
        expect(serverEntry(server, 'u1')?.f?.phone).toBe('later')
        // a's fill lost to a device's later one; the server's record now
        // holds b's, so a's edit is overridden; b's never is.
        expect(overrides(b, 'u1')).toEqual([])
        expect(overrides(a, 'u1').map((e) => e.fields)).toEqual([['phone']])
        const credited = adoptions(server, 'u1').filter(([, fields]) => fields.includes('phone'))
        expect(credited.at(-1)?.[0]).toBe('dev-b')

        // The field is the server's now: a device edit made after the
        // adoption (b saw it) loses, on every peer.
        clock.advance(1_000)
        await b.users.patch('u1', { phone: 'too late' })
        await settle()
        for (const peer of [server, a, b]) expect(peer.users.get('u1')?.phone).toBe('later')
        expect(overrides(b, 'u1').map((e) => e.fields)).toEqual([['phone']])
      },
    )

    it("a device's clear made before the adoption, later than the adopted fill, empties the field again", async () => {
      const clock = fakeClock()
      const { server, a, b } = await offlinePair(clock, 'Grace Hopper')
      clock.advance(1_000)
      await b.users.patch('u1', { phone: 'old' })
      await connect(a, b)
      await settle()
      for (const l of [...links]) await disconnect(l)
      clock.advance(GAP_MS)
      await a.users.patch('u1', { phone: 'fill' })
      clock.advance(GAP_MS)
      await b.users.patch('u1', { phone: null })
      clock.advance(GAP_MS)
      await connect(server, a)
      await settle()
      expect(server.users.get('u1')?.phone).toBe('fill')
      await connect(server, b)
      await settle()
      for (const peer of [server, a, b]) expect(peer.users.get('u1')?.phone).toBeUndefined()
      expect(serverEntry(server, 'u1')?.f?.phone).toBeUndefined()
    })

    it.each([
      ['dev-b', 'dev-d', 'dev-e'],
      ['dev-b', 'dev-e', 'dev-d'],
      ['dev-d', 'dev-b', 'dev-e'],
      ['dev-d', 'dev-e', 'dev-b'],
      ['dev-e', 'dev-b', 'dev-d'],
      ['dev-e', 'dev-d', 'dev-b'],
    ])(
      'a clear voids an adopted fill, a later fill made before the adoption still wins, an edit made after it loses (%s, %s, %s back)',
      async (...back) => {
        const clock = fakeClock()
        const server = await newServer(clock)
        await server.users.put({ id: 'u1', name: 'Ada Lovelace' })
        const peers = new Map<string, DevicePeer>()
        for (const id of ['dev-a', 'dev-b', 'dev-d', 'dev-e']) {
          const device = await newDevice(id, clock)
          peers.set(id, device)
          await disconnect(await connect(server, device))
        }
        const peer = (id: string) => peers.get(id) as DevicePeer
        clock.advance(GAP_MS)
        await peer('dev-a').users.patch('u1', { phone: 'a' })
        clock.advance(GAP_MS)
        await peer('dev-b').users.patch('u1', { phone: null })
        clock.advance(GAP_MS)
        await peer('dev-d').users.patch('u1', { phone: 'd' })
        clock.advance(GAP_MS)
        const toA = await connect(server, peer('dev-a'))
        await settle()
        expect(server.users.get('u1')?.phone).toBe('a')
        await disconnect(toA)
        // dev-e sees the adoption, then edits offline: a later edit of the server's field.
        await disconnect(await connect(server, peer('dev-e')))
        clock.advance(GAP_MS)
        await peer('dev-e').users.patch('u1', { phone: 'e' })
        for (const id of [...back, 'dev-a']) {
          await connect(server, peer(id))
          await settle()
        }
        // Of the writes made before the server took the field, dev-d's is the latest.
        for (const device of [server, ...peers.values()])
          expect(device.users.get('u1')?.phone).toBe('d')
        expect(overrides(peer('dev-e'), 'u1').map((e) => e.fields)).toEqual([['phone']])
      },
    )

    it('a fill made offline after the server took the field loses to it (rule 1)', async () => {
      const clock = fakeClock()
      const { server, a, b } = await offlinePair(clock, 'Frances Allen')

      clock.advance(1_000)
      await a.users.patch('u1', { phone: 'adopted' })
      clock.advance(GAP_MS)
      await connect(server, a)
      await settle()
      expect(serverEntry(server, 'u1')?.f?.phone).toBe('adopted')
      // b never saw the adoption, but wrote after it (by any skew of its clock).
      clock.advance(GAP_MS)
      await b.users.patch('u1', { phone: 'after' })
      await connect(server, b)
      await settle()
      for (const peer of [server, a, b]) expect(peer.users.get('u1')?.phone).toBe('adopted')
      expect(overrides(b, 'u1').map((e) => e.fields)).toEqual([['phone']])
      expect(adoptions(server, 'u1')).toEqual([['dev-a', ['phone']]])
    })
  })

  describe('rule 3: device deletes stay on the device', () => {
    it('hides the user on that device only, until the server changes the user', async () => {
      const clock = fakeClock()
      const server = await newServer(clock)
      await server.users.put({ id: 'u1', name: 'Ken Thompson', email: 'ken@example.com' })
      await server.users.put({ id: 'u2', name: 'Dennis Ritchie' })
      const a = await newDevice('dev-a', clock)
      const b = await newDevice('dev-b', clock)
      await connect(server, a)
      await connect(server, b)

      expect(await a.users.delete('u1')).toBe(true)
      expect(await a.users.delete('u1')).toBe(false)
      expect(a.users.get('u1')).toBeUndefined()
      expect(a.users.list().map((u) => u.id)).toEqual(['u2'])
      expect(a.events.query({ type: 'user-deleted-locally' }).map((e) => e.userId)).toEqual(['u1'])
      await settle()
      const full = { id: 'u1', name: 'Ken Thompson', email: 'ken@example.com' }
      expect(server.users.get('u1')).toEqual(full)
      expect(b.users.get('u1')).toEqual(full)

      // Another device's overridden edit does not change the server's record:
      // the user stays hidden on a.
      clock.advance(1_000)
      await b.users.patch('u1', { name: 'K. Thompson' })
      await settle()
      expect(a.users.get('u1')).toBeUndefined()
      // Neither does the server changing some other user.
      await server.users.patch('u2', { department: 'Bell Labs' })
      await settle()
      expect(a.users.get('u1')).toBeUndefined()
      expect(a.users.get('u2')?.department).toBe('Bell Labs')

      clock.advance(1_000)
      await server.users.patch('u1', { department: 'Unix' })
      await settle()
      expect(a.users.get('u1')).toEqual({ ...full, department: 'Unix' })
      expect(a.users.list().map((u) => u.id)).toEqual(['u1', 'u2'])
    })

    it('enrolling the user again on that device shows it again', async () => {
      const clock = fakeClock()
      const server = await newServer(clock)
      await server.users.put({ id: 'u1', name: 'Ken Thompson' })
      const a = await newDevice('dev-a', clock)
      await connect(server, a)
      await a.users.delete('u1')
      expect(a.users.get('u1')).toBeUndefined()
      await a.users.put({ id: 'u1', name: 'Ken', phone: '+1 555' })
      await settle()
      expect(a.users.get('u1')).toEqual({ id: 'u1', name: 'Ken Thompson', phone: '+1 555' })
      expect(server.users.get('u1')).toEqual({ id: 'u1', name: 'Ken Thompson', phone: '+1 555' })
    })
  })

  describe('rule 4: server deletes propagate', () => {
    it('a server delete while a device edits offline removes the user everywhere', async () => {
      const clock = fakeClock()
      const server = await newServer(clock)
      await server.users.put({ id: 'u1', name: 'Margaret Hamilton', email: 'mh@example.com' })
      await server.users.put({ id: 'u2', name: 'Katherine Johnson' })
      const a = await newDevice('dev-a', clock)
      const b = await newDevice('dev-b', clock)
      const toA = await connect(server, a)
      await connect(server, b)
      await disconnect(toA)

      clock.advance(1_000)
      expect(await server.users.delete('u1')).toBe(true)
      await settle()
      expect(b.users.get('u1')).toBeUndefined()
      // a has not seen the delete; its edits (a fill and an enrol-style put) are void.
      clock.advance(1_000)
      await a.users.patch('u1', { phone: '+1 617' })
      await a.users.put({ id: 'u1', name: 'Margaret H.', title: 'Director' })
      expect(a.users.get('u1')?.phone).toBeUndefined()
      expect(a.users.get('u1')?.name).toBe('Margaret Hamilton')

      await connect(server, a)
      await settle()
      for (const peer of [server, a, b]) {
        expect(peer.users.get('u1')).toBeUndefined()
        expect(peer.users.list().map((u) => u.id)).toEqual(['u2'])
      }
      expect(serverEntry(server, 'u1')).toMatchObject({ e: 1, d: 1 })
      expect(server.events.query({ type: 'user-deleted' }).map((e) => e.userId)).toEqual(['u1'])
      expect(adoptions(server, 'u1')).toEqual([])
    })

    it('a device that enrols the id after seeing the delete creates a new user the server adopts', async () => {
      const clock = fakeClock()
      const server = await newServer(clock)
      await server.users.put({ id: 'u1', name: 'Old Name', email: 'old@example.com' })
      const a = await newDevice('dev-a', clock)
      const b = await newDevice('dev-b', clock)
      await connect(server, a)
      await connect(server, b)
      await a.users.patch('u1', { phone: '+44 1' })
      await settle()
      clock.advance(1_000)
      await server.users.delete('u1')
      await settle()
      expect(a.users.get('u1')).toBeUndefined()

      clock.advance(1_000)
      await a.users.put({ id: 'u1', name: 'New Name' })
      await settle()
      // Nothing of the deleted user comes back: neither the server's old email
      // nor the device's old phone.
      for (const peer of [server, a, b]) {
        expect(peer.users.get('u1')).toEqual({ id: 'u1', name: 'New Name' })
      }
      const entry = serverEntry(server, 'u1')
      expect(entry?.e).toBe(1)
      expect(entry?.d).toBeUndefined()
      expect(entry?.f).toEqual({ name: 'New Name' })
      expect(adoptions(server, 'u1')).toEqual([
        ['dev-a', ['phone']],
        ['dev-a', ['name']],
      ])
    })
  })

  describe('a server clear of a field', () => {
    it.each([
      ['patch to null', (s: ServerPeer) => s.users.patch('u1', { email: null })],
      ['put omitting it', (s: ServerPeer) => s.users.put({ id: 'u1', name: 'Linus' })],
    ])('(%s) is not refilled by an older device value', async (_how, clear) => {
      const clock = fakeClock()
      const server = await newServer(clock)
      await server.users.put({ id: 'u1', name: 'Linus', email: 'old@example.com' })
      const a = await newDevice('dev-a', clock)
      await disconnect(await connect(server, a))

      clock.advance(1_000)
      await a.users.patch('u1', { email: 'device@example.com' })
      // Older by its stamp too, whichever way a's clock is off.
      clock.advance(GAP_MS)
      await clear(server)
      expect(serverEntry(server, 'u1')?.x?.email).toBeGreaterThan(0)

      await connect(server, a)
      await settle()
      expect(server.users.get('u1')).toEqual({ id: 'u1', name: 'Linus' })
      expect(a.users.get('u1')).toEqual({ id: 'u1', name: 'Linus' })
      expect(adoptions(server, 'u1')).toEqual([])

      // A device write made after the clear is a fresh fill (rule 2).
      clock.advance(1_000)
      await a.users.patch('u1', { email: 'new@example.com' })
      await settle()
      expect(server.users.get('u1')?.email).toBe('new@example.com')
      expect(adoptions(server, 'u1')).toEqual([['dev-a', ['email']]])
    })
  })

  describe('devices syncing directly while the server is unreachable', () => {
    it('follow the rules, and their data reaches the server through another device', async () => {
      const clock = fakeClock()
      const server = await newServer(clock)
      await server.users.put({ id: 'u1', name: 'Server Name', department: 'HQ' })
      const a = await newDevice('dev-a', clock)
      const b = await newDevice('dev-b', clock)
      for (const l of [await connect(server, a), await connect(server, b)]) await disconnect(l)
      await connect(a, b)

      clock.advance(1_000)
      await a.users.patch('u1', { name: 'Device Name', phone: '+47 1' })
      await a.users.put({ id: 'u2', name: 'Offshore Worker', groups: ['muster-a'] })
      clock.advance(1_000)
      await b.users.patch('u2', { title: 'Medic' })
      await settle()

      const u1 = { id: 'u1', name: 'Server Name', phone: '+47 1', department: 'HQ' }
      const u2 = { id: 'u2', name: 'Offshore Worker', title: 'Medic', groups: ['muster-a'] }
      for (const device of [a, b]) {
        expect(device.users.get('u1')).toEqual(u1)
        expect(device.users.get('u2')).toEqual(u2)
      }
      expect(overrides(a, 'u1').map((e) => e.fields)).toEqual([['name']])
      expect(server.users.list().map((u) => u.id)).toEqual(['u1'])

      // a never talks to the server: its writes travel a → b → server.
      await connect(b, server)
      await settle()
      for (const peer of [server, a, b]) expect(peer.users.list()).toEqual([u1, u2])
      expect(serverEntry(server, 'u1')?.f).toEqual({
        name: 'Server Name',
        phone: '+47 1',
        department: 'HQ',
      })
      expect(adoptions(server, 'u1')).toEqual([['dev-a', ['phone']]])
      expect(adoptions(server, 'u2')).toEqual([
        ['dev-a', ['groups', 'name']],
        ['dev-b', ['title']],
      ])
    })
  })

  describe('rule 6: credentials are ordinary fields', () => {
    const template = (seed: number, length: number): Uint8Array =>
      Uint8Array.from({ length }, (_, i) => (seed * 31 + i * 7) & 0xff)

    it('a user holding an access-on-card smart card and biometrics syncs like any other', async () => {
      const clock = fakeClock()
      const server = await newServer(clock)
      const holder = {
        id: 'u1',
        name: 'Card Holder',
        cards: [
          { type: 'access-on-card', value: 'AOC-0001' },
          { type: 'csn', value: '04A1B2C3' },
        ],
        fingerprints: [template(1, 512), template(2, 600)],
        faces: [template(3, 1024)],
        photo: template(4, 4096),
      }
      await server.users.put(holder)
      const a = await newDevice('dev-a', clock)
      const b = await newDevice('dev-b', clock)
      await connect(server, a)
      await connect(server, b)
      expect(a.users.get('u1')).toEqual(holder)

      clock.advance(1_000)
      await a.users.patch('u1', {
        department: 'Security',
        cards: [{ type: 'mobile', value: 'M-1' }],
      })
      await settle()
      const expected = { ...holder, department: 'Security' }
      for (const peer of [server, a, b]) expect(peer.users.get('u1')).toEqual(expected)
      expect(adoptions(server, 'u1')).toEqual([['dev-a', ['department']]])
      expect(overrides(a, 'u1').map((e) => e.fields)).toEqual([['cards']])

      // A device enrols a second holder, templates and all; the server adopts
      // the bytes unchanged.
      const enrolled = {
        id: 'u2',
        name: 'Second Holder',
        cards: [{ type: 'access-on-card', value: 'AOC-0002' }],
        fingerprints: [template(5, 300)],
        faces: [template(6, 700)],
        photo: template(7, 2048),
      }
      await b.users.put(enrolled)
      await settle()
      for (const peer of [server, a, b]) expect(peer.users.get('u2')).toEqual(enrolled)
      const adopted = serverEntry(server, 'u2')?.f
      expect(adopted?.photo).toBeInstanceOf(Uint8Array)
      expect(adopted?.fingerprints).toEqual([template(5, 300)])
      expect(adoptions(server, 'u2')).toEqual([
        ['dev-b', ['cards', 'faces', 'fingerprints', 'name', 'photo']],
      ])
    })
  })

  describe('rule 5: device-specific fields', () => {
    /** True when `text` appears anywhere in the replicated document's bytes. */
    const inDoc = (peer: Peer, text: string): boolean =>
      Buffer.from(Y.encodeStateAsUpdate(peer.replica.doc)).includes(text)

    it('of a user the server deletes go from the device, stored ones included, and dead delete marks too (years probe)', async () => {
      // Dead (rule 4: they never show again), they stayed on the device's
      // disk and in its memory for good: 3 MB for 300 deleted users.
      const clock = fakeClock()
      const server = await newServer(clock, { fieldPolicies: { title: 'device-specific' } })
      await server.users.put({ id: 'u1', name: 'Ann' })
      await server.users.put({ id: 'u2', name: 'Bob' })
      const store = new KeptOpenStore(memoryStore())
      const open = async (): Promise<DevicePeer> => {
        const device = await createDevice({
          id: 'dev-a',
          store,
          clock: skewedClock(clock, offsetOf(skew, 'dev-a')),
        })
        opened.push(device)
        return device
      }
      const stored = async (): Promise<string[]> => {
        const ids: string[] = []
        for await (const [key] of store.range({ gte: 'l/f/', lt: 'l/f0' })) ids.push(key.slice(4))
        return ids
      }
      let a = await open()
      const toA = await connect(server, a)
      clock.advance(1_000)
      await a.users.patch('u1', { title: 'Door 3' })
      await a.users.patch('u2', { title: 'Gate 1' })
      expect(await stored()).toEqual(['u1', 'u2'])
      await server.users.delete('u1')
      await settle()
      expect(a.users.get('u1')).toBeUndefined()
      expect(await stored()).toEqual(['u2'])
      // Values stored before this was done go with the device's first write.
      await disconnect(toA)
      const dead = await store.get('l/f/u2')
      await server.users.delete('u2')
      const again = await connect(server, a)
      await settle()
      expect(await stored()).toEqual([])
      await disconnect(again)
      await a.close()
      opened = opened.filter((peer) => peer !== a)
      await store.put('l/f/u2', dead ?? new Uint8Array())
      a = await open()
      expect(await stored()).toEqual(['u2'])
      await a.users.put({ id: 'u3', name: 'Cy' })
      expect(await stored()).not.toContain('u2')
      // Re-created, the user shows without them.
      await server.users.put({ id: 'u1', name: 'Ann again' })
      await connect(server, a)
      await settle()
      expect(a.users.get('u1')).toEqual({ id: 'u1', name: 'Ann again' })
      // A delete mark (rule 3) goes once the server changes the user: it
      // shows again, and nothing reads the mark after (only a full sync
      // cleared them).
      const marks = async (): Promise<string[]> => {
        const ids: string[] = []
        for await (const [key] of store.range({ gte: 'l/d/', lt: 'l/d0' })) ids.push(key.slice(4))
        return ids
      }
      await a.users.delete('u1')
      expect(a.users.get('u1')).toBeUndefined()
      expect(await marks()).toEqual(['u1'])
      // Another user's change touches nothing of it.
      await server.users.put({ id: 'u5', name: 'Eve' })
      await settle()
      expect(await marks()).toEqual(['u1'])
      clock.advance(GAP_MS)
      await server.users.patch('u1', { name: 'Ann changed' })
      await settle()
      expect(a.users.get('u1')?.name).toBe('Ann changed')
      expect(await marks()).toEqual([])
    })

    it('never leave the device, and a policy change re-initialises them', async () => {
      const clock = fakeClock()
      const dir = await mkdtemp(join(tmpdir(), 'rostersync-rules-'))
      dirs.push(dir)
      let server = await newServer(clock, {
        dataDir: dir,
        fieldPolicies: { title: 'device-specific' },
      })
      await server.users.put({ id: 'u1', name: 'Shared', title: 'Server title', department: 'Eng' })
      const a = await newDevice('dev-a', clock)
      const b = await newDevice('dev-b', clock)
      let toA = await connect(server, a)
      let toB = await connect(server, b)

      clock.advance(1_000)
      await a.users.patch('u1', { title: 'Door 3 operator' })
      await b.users.put({ id: 'u2', name: 'B only', title: 'Gate 1' })
      await settle()
      expect(a.users.get('u1')).toEqual({
        id: 'u1',
        name: 'Shared',
        department: 'Eng',
        title: 'Door 3 operator',
      })
      expect(server.users.get('u1')).toEqual({
        id: 'u1',
        name: 'Shared',
        department: 'Eng',
        title: 'Server title',
      })
      expect(b.users.get('u1')).toEqual({ id: 'u1', name: 'Shared', department: 'Eng' })
      expect(server.users.get('u2')).toEqual({ id: 'u2', name: 'B only' })
      expect(a.users.get('u2')).toEqual({ id: 'u2', name: 'B only' })
      for (const peer of [server, a, b]) {
        expect(inDoc(peer, 'Door 3 operator')).toBe(false)
        expect(inDoc(peer, 'Gate 1')).toBe(false)
        expect(inDoc(peer, 'Server title')).toBe(false)
      }

      // device-specific → shared: the values the peers kept for themselves are dropped.
      const restart = async (fieldPolicies: Record<string, FieldPolicy>): Promise<void> => {
        await disconnect(toA)
        await disconnect(toB)
        await server.close()
        clock.advance(1_000)
        server = await newServer(clock, { dataDir: dir, fieldPolicies })
        toA = await connect(server, a)
        toB = await connect(server, b)
        await settle()
      }
      await restart({ title: 'shared' })
      expect(a.users.get('u1')).toEqual({ id: 'u1', name: 'Shared', department: 'Eng' })
      expect(server.users.get('u1')).toEqual({ id: 'u1', name: 'Shared', department: 'Eng' })
      expect(b.users.get('u2')).toEqual({ id: 'u2', name: 'B only' })
      clock.advance(1_000)
      await a.users.patch('u1', { title: 'Now shared' })
      await settle()
      for (const peer of [server, a, b]) expect(peer.users.get('u1')?.title).toBe('Now shared')

      // shared → device-specific: the shared values are cleared on every peer.
      await restart({ title: 'shared', department: 'device-specific' })
      for (const peer of [server, a, b]) {
        expect(peer.users.get('u1')).toEqual({ id: 'u1', name: 'Shared', title: 'Now shared' })
      }
      expect(serverEntry(server, 'u1')?.f?.department).toBeUndefined()
      clock.advance(1_000)
      await b.users.patch('u1', { department: 'B local' })
      await settle()
      expect(b.users.get('u1')?.department).toBe('B local')
      expect(a.users.get('u1')?.department).toBeUndefined()
      expect(server.users.get('u1')?.department).toBeUndefined()
      expect(inDoc(b, 'B local')).toBe(false)

      // Started again with policies that do not name department: the option
      // is the whole table, so department is shared again and B's own value
      // goes (a probe: it stayed device-specific).
      await restart({})
      expect(b.users.get('u1')?.department).toBeUndefined()
      expect(server.events.query({ type: 'policy-changed' }).at(-1)?.message).toBe(
        'department is now shared',
      )
      clock.advance(1_000)
      await a.users.patch('u1', { department: 'Shared dept' })
      await settle()
      for (const peer of [server, a, b])
        expect(peer.users.get('u1')?.department).toBe('Shared dept')

      // A policy set while running stays through a start with the same
      // table as the last one (a review: every restart undid it, and rule 5
      // dropped the devices' values each time).
      await server.setFieldPolicies({ title: 'device-specific' })
      const changes = server.events.query({ type: 'policy-changed' }).length
      await restart({})
      expect(server.events.query({ type: 'policy-changed' })).toHaveLength(changes)
      clock.advance(1_000)
      await b.users.patch('u1', { title: 'B title' })
      await settle()
      expect(b.users.get('u1')?.title).toBe('B title')
      expect(server.users.get('u1')?.title).toBeUndefined()
    })
  })

  describe('last-writer-wins fields', () => {
    it('the latest write wins across the server and the devices', async () => {
      const clock = fakeClock()
      const server = await newServer(clock, { fieldPolicies: { phone: 'last-writer-wins' } })
      await server.users.put({ id: 'u1', name: 'Rig Worker', phone: '100' })
      const a = await newDevice('dev-a', clock)
      const b = await newDevice('dev-b', clock)
      const toA = await connect(server, a)
      const toB = await connect(server, b)
      const phones = () => [server, a, b].map((peer) => peer.users.get('u1')?.phone)

      clock.advance(1_000)
      await a.users.patch('u1', { phone: '200' })
      await settle()
      expect(phones()).toEqual(['200', '200', '200'])
      expect(overrides(a, 'u1')).toEqual([])

      clock.advance(1_000)
      await server.users.patch('u1', { phone: '300' })
      await settle()
      expect(phones()).toEqual(['300', '300', '300'])

      // Offline writes: the later one wins once everything meets, even though
      // the earlier writer is the server.
      await disconnect(toA)
      await disconnect(toB)
      clock.advance(1_000)
      await server.users.patch('u1', { phone: '400' })
      clock.advance(GAP_MS)
      await b.users.patch('u1', { phone: '500' })
      clock.advance(GAP_MS)
      await a.users.patch('u1', { phone: '600' })
      await connect(a, b)
      await settle()
      expect(a.users.get('u1')?.phone).toBe('600')
      expect(b.users.get('u1')?.phone).toBe('600')
      await connect(server, b)
      await settle()
      expect(phones()).toEqual(['600', '600', '600'])

      // A later clear by the server clears it everywhere.
      clock.advance(1_000)
      await server.users.patch('u1', { phone: null })
      await settle()
      expect(phones()).toEqual([undefined, undefined, undefined])
      expect(server.users.get('u1')).toEqual({ id: 'u1', name: 'Rig Worker' })
    })
  })
})
