/**
 * A new generation's base is built off the event loop's single turn
 * (issue 13): `server.compactHistory()` builds it in chunks of
 * `limits.generationBuildChunkEntries`, a turn of the loop between two,
 * and merges the chunks into the snapshot in a worker thread when large.
 * - reads are answered while the base is built (counted in turns, never
 *   in time), from the old document, and a write made meanwhile waits and
 *   lands in the new generation;
 * - a device's write sent while the base is built reaches the new
 *   generation (refused for the old one, carried by the device's move);
 * - the snapshot merged in a worker is the base: a restart opens the same
 *   users on the new generation.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { limits } from '../core/limits.js'
import { createDevice, type DevicePeer } from '../peers/create-device.js'
import { createServer, type ServerPeer } from '../server-peer/create-server.js'
import { memoryStore } from '../storage/level-store.js'
import { eventually } from './helpers/eventually.js'
import { withLimits } from './helpers/limits.js'

const SITE_KEY = 'generations-build-site-key'
const USERS = 300
let dir = ''
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rostersync-genbuild-'))
})
afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

function openServer(name: string): Promise<ServerPeer> {
  return createServer({ dataDir: join(dir, name), siteKey: SITE_KEY, listen: false })
}

async function enrol(server: ServerPeer): Promise<void> {
  for (let round = 0; round < 3; round++)
    await Promise.all(
      Array.from({ length: USERS }, (_, i) =>
        server.users.put({ id: `u${i}`, name: `name ${i} round ${round}` }),
      ),
    )
}

const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

describe('compactHistory builds the base in chunks', () => {
  it('answers reads between chunks, and a write made meanwhile lands in the new generation', async () => {
    withLimits(limits, { generationBuildChunkEntries: 10 })
    // A store in memory: its writes take no turn of the loop, so the turns
    // counted are the build's.
    const server = await createServer({ store: memoryStore(), siteKey: SITE_KEY, listen: false })
    try {
      await enrol(server)
      const before = server.users.list()
      let done = false
      const switching = server.compactHistory().finally(() => {
        done = true
      })
      // Turns of the event loop while the switch runs, each answering a read.
      let reads = 0
      let written: Promise<unknown> | undefined
      while (!done) {
        await turn()
        if (done) break
        // The old document, whole, until the switch lands.
        expect(server.users.get(`u${reads % USERS}`)?.name).toBe(`name ${reads % USERS} round 2`)
        expect(server.generation.n).toBe(0)
        reads++
        if (reads === 5) written = server.users.put({ id: 'late', name: 'Written meanwhile' })
      }
      const result = await switching
      await written
      // One turn per chunk at least: USERS entries read and as many written.
      expect(reads).toBeGreaterThanOrEqual((2 * USERS) / 10)
      expect(result.generation).toBe(1)
      expect(server.users.get('late')?.name).toBe('Written meanwhile')
      expect(server.users.list().filter((u) => u.id !== 'late')).toEqual(before)
      // The write is in the new generation's document: under its clientID,
      // after the base (the queue held it until the switch landed).
      expect(Y.getState(server.replica.doc.store, server.replica.doc.clientID)).toBeGreaterThan(0)
    } finally {
      await server.close()
    }
  })

  it('starts while writes come back to back, which wait for it and land in the new generation', async () => {
    // LevelDB, as the probe that found it: the switch waited for an idle
    // queue, and a writer that never paused kept it waiting (60 s and more).
    const server = await openServer('back-to-back')
    try {
      await enrol(server)
      let stop = false
      let writes = 0
      const writer = (async () => {
        while (!stop) await server.users.put({ id: `w${writes++ % 50}`, name: `write ${writes}` })
      })()
      while (writes < 20) await turn()
      const bound = new Promise<'starved'>((resolve) =>
        setTimeout(() => resolve('starved'), 15_000),
      )
      const outcome = await Promise.race([server.compactHistory(), bound])
      const during = writes
      // The writer never paused; it goes on, on the new generation.
      while (writes < during + 20) await turn()
      stop = true
      await writer
      expect(outcome).not.toBe('starved')
      expect(server.generation.n).toBe(1)
      expect(server.users.get(`w${(writes - 1) % 50}`)?.name).toBe(`write ${writes}`)
    } finally {
      await server.close()
    }
  }, 60_000)

  it('stores the chunks merged in a worker thread as the snapshot (a restart opens it whole)', async () => {
    withLimits(limits, { generationBuildChunkEntries: 25 })
    withLimits(limits, { generationMergeOffThreadBytesMin: 0 })
    let server = await openServer('worker')
    try {
      await enrol(server)
      const before = server.users.list()
      const result = await server.compactHistory()
      const inMemory = Y.encodeStateVector(server.replica.doc)
      await server.close()
      server = await openServer('worker')
      expect(server.generation).toEqual({ n: 1, id: result.id })
      expect(server.users.list()).toEqual(before)
      // The stored snapshot holds what memory held (the server's own
      // clientID writes nothing before the restart).
      const reopened = Y.decodeStateVector(Y.encodeStateVector(server.replica.doc))
      for (const [client, clock] of Y.decodeStateVector(inMemory))
        expect(reopened.get(client)).toBe(clock)
    } finally {
      await server.close()
    }
  })

  it("gets a device's write sent while the base is built into the new generation", async () => {
    // A long build (a turn per entry, and the merge in a worker): the
    // write arrives while it runs.
    withLimits(limits, { generationBuildChunkEntries: 1 })
    withLimits(limits, { generationMergeOffThreadBytesMin: 0 })
    const server = await createServer({ dataDir: join(dir, 'device'), siteKey: SITE_KEY })
    let device: DevicePeer | undefined
    try {
      await Promise.all(
        Array.from({ length: 2_000 }, (_, i) => server.users.put({ id: `u${i}`, name: `n${i}` })),
      )
      device = await createDevice({
        id: 'writer',
        dataDir: join(dir, 'writer'),
        siteKey: SITE_KEY,
        server: server.url,
      })
      await device.sync.whenReady()
      // Updates the server receives from the device while the switch runs
      // (observed on their way, not changed).
      let done = false
      let arrived = 0
      const replica = server.replica
      const applyRemote = replica.applyRemote.bind(replica)
      replica.applyRemote = (update, from, scanned) => {
        if (!done) arrived++
        return applyRemote(update, from, scanned)
      }
      const switching = server.compactHistory().finally(() => {
        done = true
      })
      // Some turns into the build, the device writes (and sends it).
      for (let i = 0; i < 5; i++) await turn()
      expect(done).toBe(false)
      await device.users.patch('u1', { email: 'during@build.example' })
      await switching
      // It reached the server during the build: queued for the old
      // generation, and refused when the switch landed.
      expect(arrived).toBeGreaterThan(0)
      // Its link was closed (4412); a manual sync brings it back now.
      const moving = device
      await eventually(() => expect(moving.sync.status().link).not.toBe('connected'))
      await moving.sync.delta()
      await moving.sync.whenIdle()
      await eventually(() => expect(server.users.get('u1')?.email).toBe('during@build.example'))
      expect(server.generation.n).toBe(1)
      expect(moving.events.query({ type: 'generation-moved' })).toHaveLength(1)
    } finally {
      await device?.close()
      await server.close()
    }
  })
})
