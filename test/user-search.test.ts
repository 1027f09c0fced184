/**
 * The admin search index (server-peer/user-search.ts) at the scale of
 * issue 13: what one page request costs does not grow with the roster.
 * No timing is asserted; the tests count the work (calls into the replica).
 */
import { afterEach, describe, expect, it, vi } from 'vitest'
import * as Y from 'yjs'
import { createServer, type ServerPeer } from '../server-peer/create-server.js'
import {
  UserIndex,
  WARM_BUSY_MS_MAX,
  WARM_ENTRIES_PER_TURN,
  WARM_QUIET_MS,
  WARM_TURN_EVERY_MS_MAX,
  WARM_TURN_MS,
} from '../server-peer/user-search.js'
import { memoryStore } from '../storage/level-store.js'
import { usersRootName, type DeviceEntry } from '../core/entries.js'
import { asUserId, asWriterId } from '../core/ids.js'
import { deviceWrite } from '../core/writes.js'

const closers: Array<() => Promise<void>> = []
afterEach(async () => {
  vi.restoreAllMocks()
  for (const close of closers.splice(0).reverse()) await close().catch(() => undefined)
})

async function server(): Promise<ServerPeer> {
  const peer = await createServer({ store: memoryStore(), listen: false })
  closers.push(() => peer.close())
  return peer
}

const id = (i: number): string => `u${String(i).padStart(5, '0')}`

async function enrol(peer: ServerPeer, from: number, count: number, step = 1): Promise<void> {
  await Promise.all(
    Array.from({ length: count }, (_, k) =>
      peer.users.put({ id: id(from + k * step), name: `Person ${from + k * step}` }),
    ),
  )
}

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

describe('UserIndex search', () => {
  it('matches case-insensitively beyond ASCII (ß as ss, Turkish i, final sigma, composed or not)', async () => {
    const peer = await server()
    await peer.users.put({ id: 'tr', name: 'İlker Yılmaz' })
    await peer.users.put({ id: 'de', name: 'Hauptstraße 5' })
    await peer.users.put({ id: 'el', name: 'ΟΔΥΣΣΕΥΣ' })
    await peer.users.put({ id: 'fr', name: 'Ame\u0301lie' })
    await peer.users.put({ id: 'en', name: 'Plain Ascii' })
    await peer.users.put({ id: 'de2', name: 'HAUPTSTRAẞE 7' })
    await peer.users.put({ id: 'el2', name: 'Κωνσταντίνος' })
    const index = new UserIndex(peer.replica)
    const found = (q: string): string[] => index.page({ q, limit: 10 }).users.map((u) => u.id)
    expect(found('ilker')).toEqual(['tr'])
    expect(found('YILMAZ')).toEqual(['tr'])
    expect(found('yılmaz')).toEqual(['tr'])
    expect(found('STRASSE')).toEqual(['de', 'de2'])
    expect(found('straße')).toEqual(['de', 'de2'])
    // A sigma inside a word, typed as a word's end would be (a review).
    expect(found('κωνσ')).toEqual(['el2'])
    expect(found('ΚΩΝΣ')).toEqual(['el2'])
    expect(found('οδυσσευς')).toEqual(['el'])
    expect(found('AMÉLIE')).toEqual(['fr'])
    expect(found('plain ASCII')).toEqual(['en'])
    expect(found('zz')).toEqual([])
    index.close()
  })
})

describe('UserIndex at scale (issue 13)', () => {
  it('takes many new users in without listing and sorting the whole roster again', async () => {
    const peer = await server()
    // Even ids first, odd ones later: the new ids fall between the old ones.
    await enrol(peer, 0, 300, 2)
    const index = new UserIndex(peer.replica)
    expect(index.page({ limit: 3 }).users.map((u) => u.id)).toEqual([id(0), id(2), id(4)])
    const listAll = vi.spyOn(peer.replica, 'allUserIds')
    await enrol(peer, 1, 200, 2)
    await enrol(peer, 1_000, 5)
    const page = index.page({ limit: 1_000 })
    expect(listAll).not.toHaveBeenCalled()
    expect(page.users.map((u) => u.id)).toEqual(peer.users.list().map((u) => u.id))
    expect(page.users).toHaveLength(505)
    index.close()
  })

  it('warms up in slices of at most WARM_ENTRIES_PER_TURN views a turn', async () => {
    const peer = await server()
    const users = 3 * WARM_ENTRIES_PER_TURN + 10
    await enrol(peer, 0, users)
    let ms = 0
    const index = new UserIndex(peer.replica, { now: () => ms, loopActiveMs: () => 0 })
    const view = vi.spyOn(peer.replica, 'view')
    expect(index.page({ limit: 5 }).users).toHaveLength(5)
    // Five entries computed, the sixth to know that a page follows, and
    // the page's five views resolved again.
    expect(view).toHaveBeenCalledTimes(11)
    ms += WARM_QUIET_MS // no page since: the warm-up goes on
    let before = view.mock.calls.length
    for (let turn = 0; turn < 10 && before < users; turn++) {
      await nextTurn()
      const now = view.mock.calls.length
      expect(now - before).toBeLessThanOrEqual(WARM_ENTRIES_PER_TURN)
      before = now
    }
    expect(view).toHaveBeenCalledTimes(users + 5)
    index.close()
  })

  it('gives each warm-up turn at most WARM_TURN_MS, however slow a view (first pages after a cold start)', async () => {
    const peer = await server()
    const users = 2 * WARM_ENTRIES_PER_TURN
    await enrol(peer, 0, users)
    // A clock that moves 1 ms every time it is read: views as slow as that.
    let ms = 0
    const index = new UserIndex(peer.replica, { now: () => ms++, loopActiveMs: () => 0 })
    const view = vi.spyOn(peer.replica, 'view')
    const first = index.page({ limit: 5 })
    ms += WARM_QUIET_MS // no page since: the warm-up goes on
    let before = view.mock.calls.length
    let turns = 0
    while (before < users + first.users.length) {
      await nextTurn()
      const now = view.mock.calls.length
      // The budget is looked at every 8 entries: 4 looks of 1 ms each.
      expect(now - before).toBeGreaterThan(0)
      expect(now - before).toBeLessThanOrEqual(8 * WARM_TURN_MS)
      before = now
      turns++
    }
    expect(turns).toBeGreaterThanOrEqual(users / (8 * WARM_TURN_MS))
    // Warm, the pages are those of the whole index.
    expect(index.page({ limit: 5 })).toEqual(first)
    expect(index.page({ limit: users }).users.map((u) => u.id)).toEqual(
      peer.users.list().map((u) => u.id),
    )
    index.close()
  })

  it('gives way to pages: waits WARM_QUIET_MS after one, but runs a turn every WARM_TURN_EVERY_MS_MAX', async () => {
    const peer = await server()
    await enrol(peer, 0, 16 * WARM_ENTRIES_PER_TURN)
    let ms = 0
    const index = new UserIndex(peer.replica, { now: () => ms, loopActiveMs: () => 0 })
    const view = vi.spyOn(peer.replica, 'view')
    const first = index.page({ limit: 5 })
    const calls = (): number => view.mock.calls.length
    const settle = (): Promise<void> =>
      new Promise((resolve) => setTimeout(resolve, 3 * WARM_QUIET_MS))
    // A page was just asked for (the clock has not moved): nothing is warmed.
    await settle()
    expect(calls()).toBe(11)
    // Quiet for WARM_QUIET_MS: the warm-up runs.
    ms += WARM_QUIET_MS
    for (let waited = 0; calls() === 11 && waited < 100; waited++)
      await new Promise((resolve) => setTimeout(resolve, 1))
    expect(calls()).toBeGreaterThan(11)
    // Pages keep coming, and are answered as the full index would.
    ms += 1
    expect(index.page({ limit: 5 })).toEqual(first)
    const paged = calls()
    await settle()
    expect(calls()).toBe(paged)
    // However busy, a turn runs once WARM_TURN_EVERY_MS_MAX passed since the last.
    ms += WARM_TURN_EVERY_MS_MAX
    expect(index.page({ limit: 5 })).toEqual(first)
    const busy = calls()
    await settle()
    // One turn, then it gives way again.
    expect(calls()).toBe(busy + WARM_ENTRIES_PER_TURN)
    index.close()
  })

  it('gives way to other work on the event loop, but runs a turn every WARM_TURN_EVERY_MS_MAX', async () => {
    const peer = await server()
    await enrol(peer, 0, 16 * WARM_ENTRIES_PER_TURN)
    let ms = 0
    // Other work kept the loop busy for `active` ms between two looks.
    let active = WARM_BUSY_MS_MAX + 1
    const index = new UserIndex(peer.replica, { now: () => ms, loopActiveMs: () => active })
    const view = vi.spyOn(peer.replica, 'view')
    index.page({ limit: 5 })
    const calls = (): number => view.mock.calls.length
    const settle = (): Promise<void> =>
      new Promise((resolve) => setTimeout(resolve, 3 * WARM_QUIET_MS))
    // No page for a while, but the loop is busy: nothing is warmed.
    ms += WARM_QUIET_MS
    await settle()
    expect(calls()).toBe(11)
    // However busy, a turn runs once WARM_TURN_EVERY_MS_MAX passed since the last.
    ms += WARM_TURN_EVERY_MS_MAX
    await settle()
    // (the page computed the first six entries already)
    expect(calls()).toBe(11 + WARM_ENTRIES_PER_TURN - 6)
    // Quiet loop: the warm-up goes on, a turn after another.
    active = WARM_BUSY_MS_MAX
    for (let waited = 0; calls() < 10 + 3 * WARM_ENTRIES_PER_TURN && waited < 200; waited++)
      await new Promise((resolve) => setTimeout(resolve, 1))
    expect(calls()).toBeGreaterThanOrEqual(10 + 3 * WARM_ENTRIES_PER_TURN)
    index.close()
  })

  it('keeps what the filters read, not the views: a page resolves its own views again', async () => {
    const peer = await server()
    await enrol(peer, 0, 100)
    await peer.users.patch(id(7), { status: 'disabled', groups: ['night'] })
    const index = new UserIndex(peer.replica)
    expect(index.page({ limit: 100, total: true }).total).toBe(100)
    const expected = peer.users.get(id(7))
    const view = vi.spyOn(peer.replica, 'view')
    const page = index.page({ limit: 10, status: 'disabled', group: 'night', total: true })
    expect(page.users).toEqual([expected])
    expect(page.total).toBe(1)
    // The entries were computed before: only the page's one view is resolved.
    expect(view).toHaveBeenCalledTimes(1)
    index.close()
  })

  it("follows a device's part after Yjs replaced its first placeholder root (same number of roots)", async () => {
    const peer = await server()
    await enrol(peer, 0, 3)
    await peer.setFieldPolicies({ status: 'last-writer-wins' })
    const index = new UserIndex(peer.replica)
    const disabled = (): string[] =>
      index.page({ limit: 10, status: 'disabled' }).users.map((u) => u.id)
    expect(disabled()).toEqual([])
    // Later than the policy's stamp: writes before it do not count (rule 5).
    const since = (peer.replica.doc.getMap('m:server').get('status') as { t: number }).t
    let stamp = since
    /** A device's own part, written in plain Yjs: disables users one update at a time. */
    const device = (name: string, clientID: number) => {
      const doc = new Y.Doc()
      doc.clientID = clientID
      const root = doc.getMap<DeviceEntry>(usersRootName(asWriterId(name)))
      return async (user: string): Promise<void> => {
        const before = Y.encodeStateVector(doc)
        const key = asUserId(user)
        const written = new Map([['status', 'disabled']])
        root.set(key, deviceWrite(root.get(key), 0, written, ++stamp))
        await peer.replica.applyRemote(Y.encodeStateAsUpdate(doc, before))
      }
    }
    // d1 first: the server's reads then make every root it has (revocations).
    await device('d1', 4241)(id(0))
    expect(disabled()).toEqual([id(0)])
    // d2's first update makes Yjs create its root as a placeholder, which
    // the server's next read of the part (getMap) replaces with a typed map:
    // the count of roots stays the same.
    const d2 = device('d2', 4242)
    await d2(id(1))
    expect(disabled()).toEqual([id(0), id(1)])
    await d2(id(2))
    expect(peer.users.get(id(2))?.status).toBe('disabled')
    expect(disabled()).toEqual([id(0), id(1), id(2)])
    index.close()
  })
})

describe('UserIndex pages', () => {
  it('gives a filtered page that ends on the last match no next cursor (found by a probe: it led to an empty page)', async () => {
    const peer = await server()
    await Promise.all(
      Array.from({ length: 30 }, (_, i) =>
        peer.users.put({ id: id(i), name: `Person ${i}`, groups: i < 10 ? ['front'] : ['back'] }),
      ),
    )
    const index = new UserIndex(peer.replica)
    const first = index.page({ limit: 10, group: 'front' })
    expect(first.users).toHaveLength(10)
    expect(first.next).toBeNull()
    // One match short of a full page further: a cursor, and the page after it holds the rest.
    const partial = index.page({ limit: 9, group: 'front' })
    expect(partial.next).toBe(id(8))
    expect(index.page({ limit: 9, group: 'front', after: id(8) }).users.map((u) => u.id)).toEqual([
      id(9),
    ])
    // Unfiltered, a full page before the end still has one.
    expect(index.page({ limit: 10 }).next).toBe(id(9))
    expect(index.page({ limit: 10, after: id(19) }).next).toBeNull()
    index.close()
  })

  it('gives an unfiltered page followed only by deleted users no next cursor (a probe: "Next page" led to "No users.")', async () => {
    const peer = await server()
    await Promise.all(
      Array.from({ length: 30 }, (_, i) => peer.users.put({ id: id(i), name: `Person ${i}` })),
    )
    const index = new UserIndex(peer.replica)
    expect(index.page({ limit: 20 }).next).toBe(id(19))
    // The last ten deleted after the index knew them.
    for (let i = 20; i < 30; i++) await peer.users.delete(id(i))
    const page = index.page({ limit: 20 })
    expect(page.users).toHaveLength(20)
    expect(page.next).toBeNull()
    // One left after the page: a cursor again.
    await peer.users.put({ id: id(29), name: 'Back' })
    expect(index.page({ limit: 20 }).next).toBe(id(19))
    index.close()
  })
})
