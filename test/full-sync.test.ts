/**
 * The full sync through the public API, over a real WebSocket on 127.0.0.1
 * with LevelDB in a temp dir (SEMANTICS.md, "Sync lifecycle"; issue 12):
 * - rule 3: a user deleted on a device shows again after a full sync, and
 *   stays shown across a restart;
 * - a SIGKILL at any store write of a full sync (a real child process, see
 *   test/fixtures/full-sync-child.ts) leaves the device as it was before
 *   the sync or as it is after it: never an empty roster that says it is
 *   offline-ready, never without its acknowledged own writes, and an
 *   enrolment made then on an id the server deleted follows rule 4.
 *
 * Each runs twice (issue 12, clocks that differ): the devices' wall clocks
 * ahead of the server's, then behind it (test/helpers/skewed-clock.ts).
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { createDevice, type DevicePeer } from '../peers/create-device.js'
import { systemClock } from '../peers/system-clock.js'
import { createServer, type ServerPeer } from '../server-peer/create-server.js'
import { DEVICE_SKEWS, offsetOf, skewedClock, type Skew } from './helpers/skewed-clock.js'
import { runStallingChild, type ChildRun } from './helpers/stalling-child.js'

const SITE_KEY = 'full-sync-site-key'
const childScript = fileURLToPath(new URL('./fixtures/full-sync-child.ts', import.meta.url))

let dir = ''
let server: ServerPeer
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rostersync-full-'))
  server = await createServer({ dataDir: join(dir, 'server'), siteKey: SITE_KEY })
  await server.users.put({ id: 'A', name: 'Ann' })
  await server.users.put({ id: 'B', name: 'Bob' })
  await server.users.put({ id: 'C', name: 'Cat' })
  // X is deleted on the server (epoch 1) before any device joins: every
  // device has seen the delete, so enrolling X makes a new user (rule 4).
  await server.users.put({ id: 'X', name: 'Gone' })
  await server.users.delete('X')
})
afterAll(async () => {
  await server.close()
  await rm(dir, { recursive: true, force: true })
})

const dataDirOf = (id: string): string => join(dir, id)

/** What the crash sweeps of every round found: before or after the full sync. */
const seenOverRounds = new Set<string>()

/** The skew of the round running (set per `describe.each` round). */
let skew: Skew = { name: 'none', offsetsMs: {} }
/** Every device of a round runs on the wall clock of the round's D1. */
const deviceOffsetMs = (): number => offsetOf(skew, 'D1')

function openDevice(id: string, online: boolean): Promise<DevicePeer> {
  return createDevice({
    id,
    dataDir: dataDirOf(id),
    siteKey: SITE_KEY,
    clock: skewedClock(systemClock, deviceOffsetMs()),
    ...(online ? { server: server.url } : {}),
  })
}

/**
 * A device that completed a full sync, then deleted A on itself and
 * enrolled a user of its own, `O-<id>`, both acknowledged by the server.
 * Returns the time of that full sync.
 */
async function prepared(id: string): Promise<number> {
  const d = await openDevice(id, true)
  try {
    await d.sync.whenIdle()
    await d.users.delete('A')
    await d.users.put({ id: `O-${id}`, name: `Own ${id}` })
    await d.sync.whenIdle()
    expect(server.users.get(`O-${id}`)?.name).toBe(`Own ${id}`)
    return d.sync.status().lastFullSyncAt as number
  } finally {
    await d.close()
  }
}

describe.each(DEVICE_SKEWS.map((round, i) => ({ ...round, i })))('$name', (round) => {
  beforeEach(() => {
    skew = round
  })

  describe('rule 3 after a full sync', () => {
    it('a user deleted on the device shows again, and stays shown across a restart', async () => {
      const id = `R3-${round.i}`
      await prepared(id)
      const d = await openDevice(id, true)
      try {
        await d.sync.whenIdle()
        expect(d.users.get('A')).toBeUndefined()
        await d.sync.full()
        // The device's own wall clock stamped it: minutes off the system's.
        const at = d.sync.status().lastFullSyncAt ?? Date.now()
        expect(Math.sign(at - Date.now())).toBe(Math.sign(deviceOffsetMs()))
        expect(d.users.get('A')).toEqual({ id: 'A', name: 'Ann' })
        expect(d.users.list()).toEqual(server.users.list().map((u) => d.users.get(u.id)))
      } finally {
        await d.close()
      }
      const again = await openDevice(id, false)
      try {
        expect(again.users.get('A')).toEqual({ id: 'A', name: 'Ann' })
        expect(again.users.get(`O-${id}`)?.name).toBe(`Own ${id}`)
      } finally {
        await again.close()
      }
    })
  })

  /** Runs the child; it is killed with SIGKILL as soon as it prints its STALL line. */
  function runChild(options: Record<string, unknown>): Promise<ChildRun> {
    return runStallingChild(childScript, options)
  }

  function childOptions(id: string): Record<string, unknown> {
    return {
      dataDir: dataDirOf(id),
      id,
      server: server.url,
      siteKey: SITE_KEY,
      offsetMs: deviceOffsetMs(),
    }
  }

  /**
   * Reopens a killed device offline and checks it is as before the full sync
   * or as after it; then enrols X offline and, online again, checks the
   * server took it as a new user (rule 4). Returns which state it found.
   */
  async function checkAfterCrash(
    id: string,
    fullSyncBefore: number,
    where: string,
  ): Promise<'before' | 'after'> {
    const d = await openDevice(id, false)
    let state: 'before' | 'after'
    try {
      const status = d.sync.status()
      expect(status.offlineReady, where).toBe(true)
      expect(status.warning, where).toBeUndefined()
      state = (status.lastFullSyncAt ?? 0) > fullSyncBefore ? 'after' : 'before'
      // Before: the server's roster (the sync's push brought it) but A, which
      // this device deleted; after: the server's roster whole (rule 3).
      const expected = server.users.list().filter((u) => state === 'after' || u.id !== 'A')
      expect(expected.map((u) => u.id)).toContain(`O-${id}`)
      expect(expected.map((u) => u.id)).toContain(`C-${id}`)
      expect(d.users.list(), `${where}: the roster ${state} the full sync`).toEqual(expected)
      await d.users.put({ id: 'X', name: `New X ${id}` })
    } finally {
      await d.close()
    }
    const online = await openDevice(id, true)
    try {
      await online.sync.whenIdle()
      expect(server.users.get('X')?.name, `${where}: rule 4`).toBe(`New X ${id}`)
      expect(online.users.get('X')?.name, `${where}: rule 4`).toBe(`New X ${id}`)
    } finally {
      await online.close()
    }
    // The next case enrols X again, as a new user of its own.
    await server.users.delete('X')
    return state
  }

  describe('a SIGKILL at any store write of a full sync', () => {
    it('leaves the device as before or as after it, at every write', async () => {
      // A full sync run to its end numbers its writes.
      const dryId = `K-dry-${round.i}`
      await prepared(dryId)
      const dry = await runChild(childOptions(dryId))
      expect(dry.lines, dry.stderr).toContain('FULL ok')
      const writes = dry.lines.filter((line) => line.startsWith('WRITE '))
      // At least: sync-started, the wipe's clientID, the fetched roster, the commit.
      expect(writes.length, writes.join('\n')).toBeGreaterThanOrEqual(4)
      // The commit replaces the snapshot, drops the old update log, clears
      // the deletes and records the sync, in one write.
      const kinds = (write: string): string[] => (write.split(' ')[2] ?? '').split(',')
      const commit = ['+y/s', '-y/u', '-l/d', '+r/sync/state']
      expect(
        writes.filter((w) => commit.every((k) => kinds(w).includes(k))),
        writes.join('\n'),
      ).toHaveLength(1)

      // The rounds share the sweep: each kills at every other point (by
      // write and side), so the file's time does not double with the skew
      // rounds while every point is still killed at once per file run.
      const seen = new Set<string>()
      for (let n = 1; n <= writes.length; n++) {
        for (const [side, when] of (['before', 'after'] as const).entries()) {
          if ((n + side) % DEVICE_SKEWS.length !== round.i) continue
          const id = `K${n}${when[0]}-${round.i}`
          const fullSyncBefore = await prepared(id)
          const run = await runChild({ ...childOptions(id), stallAt: n, stallWhen: when })
          const where = `killed ${when} write ${n} (${run.stall ?? 'no stall'})`
          expect(run.stall, `${where}; stderr: ${run.stderr}`).toBeDefined()
          seen.add(await checkAfterCrash(id, fullSyncBefore, where))
        }
      }
      // The sweep saw both sides of the commit (over the rounds).
      for (const state of seen) seenOverRounds.add(state)
      if (round.i === DEVICE_SKEWS.length - 1)
        expect([...seenOverRounds].sort()).toEqual(['after', 'before'])
    }, 300_000)
  })
})
