/**
 * A SIGKILL at any store write of `server.compactHistory()` (a real child
 * process on LevelDB, test/fixtures/generation-child.ts) restarts the
 * server on the old generation or on the new one, whole: the same roster
 * either way, the generation record and the document agreeing (the new
 * generation's document holds no history, the old one's all of it).
 *
 * A SIGKILL at any store write of a device's move
 * (test/fixtures/generation-move-child.ts) restarts the device on its old
 * generation (it moves again) or on the new one: its offline edit made on
 * the old generation is there either way and reaches the server, its
 * local delete (rule 3) holds, and it is offline-ready.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { createDevice, type DevicePeer } from '../peers/create-device.js'
import { createServer, type ServerPeer } from '../server-peer/create-server.js'
import { runStallingChild, type ChildRun } from './helpers/stalling-child.js'

const SITE_KEY = 'generation-crash-site-key'
const childScript = fileURLToPath(new URL('./fixtures/generation-child.ts', import.meta.url))
const moveScript = fileURLToPath(new URL('./fixtures/generation-move-child.ts', import.meta.url))

let dir = ''
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rostersync-gen-crash-'))
})
afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

/** Runs a child (the server's by default); killed with SIGKILL at its STALL line. */
function runChild(options: Record<string, unknown>, script = childScript): Promise<ChildRun> {
  return runStallingChild(script, options)
}

/** The roster the child printed before the switch. */
function viewsOf(run: ChildRun): unknown {
  const line = run.lines.find((l) => l.startsWith('VIEWS '))
  expect(line, run.stderr).toBeDefined()
  return JSON.parse((line ?? 'VIEWS null').slice('VIEWS '.length))
}

/** Reopens the killed server's directory and says which generation it found. */
async function reopen(dataDir: string, views: unknown, where: string): Promise<number> {
  const server = await createServer({ dataDir, siteKey: SITE_KEY, listen: false })
  try {
    expect(server.users.list(), where).toEqual(views)
    const n = server.generation.n
    let deleted = 0
    for (const structs of server.replica.doc.store.clients.values())
      for (const struct of structs) if (struct.deleted) deleted++
    // The new generation holds no history; the old one all of it.
    if (n === 1) expect(deleted, where).toBe(0)
    else expect(deleted, where).toBeGreaterThan(0)
    expect(server.events.query({ type: 'history-compacted' }), where).toHaveLength(n)
    // It still writes, and compacts again.
    await server.users.put({ id: 'later', name: 'Later' })
    const again = await server.compactHistory()
    expect(again.generation, where).toBe(n + 1)
    return n
  } finally {
    await server.close()
  }
}

describe('a SIGKILL at any store write of compactHistory', () => {
  it('restarts the server on the old generation or the new one, whole', async () => {
    const dryDir = join(dir, 'dry')
    const dry = await runChild({ dataDir: dryDir, siteKey: SITE_KEY })
    expect(dry.lines, dry.stderr).toContain('COMPACTED 1')
    const writes = dry.lines.filter((line) => line.startsWith('WRITE '))
    // The switch is one write: the snapshot, the old log deleted, the
    // generation record and the event.
    const kinds = (write: string): string[] => (write.split(' ')[2] ?? '').split(',')
    const switchWrite = ['+y/s', '-y/u', '+r/site/generation', '+e/', '+m/client']
    expect(
      writes.filter((w) => switchWrite.every((k) => kinds(w).some((x) => x.startsWith(k)))),
      writes.join('\n'),
    ).toHaveLength(1)
    expect(await reopen(dryDir, viewsOf(dry), 'dry run')).toBe(1)

    const seen = new Set<number>()
    for (let n = 1; n <= writes.length; n++) {
      for (const when of ['before', 'after'] as const) {
        const dataDir = join(dir, `k${n}${when}`)
        const run = await runChild({ dataDir, siteKey: SITE_KEY, stallAt: n, stallWhen: when })
        const where = `killed ${when} write ${n} (${run.stall ?? 'no stall'})`
        expect(run.stall, `${where}; stderr: ${run.stderr}`).toBeDefined()
        seen.add(await reopen(dataDir, viewsOf(run), where))
      }
    }
    expect([...seen].sort()).toEqual([0, 1])
  })
})

describe("a SIGKILL at any store write of a device's move", () => {
  let server: ServerPeer
  beforeAll(async () => {
    server = await createServer({ dataDir: join(dir, 'move-server'), siteKey: SITE_KEY })
    await server.users.put({ id: 'A', name: 'Ann' })
    await server.users.put({ id: 'B', name: 'Bob' })
  })
  afterAll(async () => {
    await server.close()
  })

  const dataDirOf = (id: string): string => join(dir, `move-${id}`)
  const openDevice = (id: string, online: boolean): Promise<DevicePeer> =>
    createDevice({
      id,
      dataDir: dataDirOf(id),
      siteKey: SITE_KEY,
      ...(online ? { server: server.url } : {}),
    })

  /**
   * A device that deleted A locally and, offline, enrolled `O-<id>`; the
   * server then starts a new generation. Returns the generation it left.
   */
  async function prepared(id: string): Promise<number> {
    const d = await openDevice(id, true)
    await d.sync.whenReady()
    await d.users.delete('A')
    await d.sync.whenIdle()
    await d.close()
    const offline = await openDevice(id, false)
    await offline.users.put({ id: `O-${id}`, name: `Offline ${id}` })
    await offline.close()
    const before = server.generation.n
    await server.compactHistory()
    return before
  }

  /** Which generation the killed device came back on (its record). */
  async function checkAfterCrash(id: string, left: number, where: string): Promise<string> {
    const d = await openDevice(id, false)
    let state: string
    try {
      const record = d.replica.record('sync', 'generation') as { n: number } | undefined
      const n = record?.n ?? 0
      state = n === server.generation.n ? 'after' : n === left ? 'before' : `generation ${n}`
      // Before: nothing of the new generation is in its stored document
      // (what it received while moving was never stored: no mix of the two).
      if (state === 'before') {
        const theirs = Y.decodeStateVector(Y.encodeStateVector(server.replica.doc))
        const mine = [...Y.decodeStateVector(Y.encodeStateVector(d.replica.doc)).keys()]
        expect(
          mine.filter((c) => theirs.has(c)),
          `${where}: new generation in the old`,
        ).toEqual([])
      }
      expect(d.sync.status().offlineReady, where).toBe(true)
      expect(d.users.get(`O-${id}`)?.name, `${where}: the offline edit`).toBe(`Offline ${id}`)
      expect(d.users.get('A'), `${where}: rule 3`).toBeUndefined()
      expect(d.users.get('B')?.name, where).toBe('Bob')
    } finally {
      await d.close()
    }
    const online = await openDevice(id, true)
    try {
      await online.sync.delta()
      await online.sync.whenIdle()
      expect(server.users.get(`O-${id}`)?.name, `${where}: reached the server`).toBe(
        `Offline ${id}`,
      )
      expect(online.users.get('A'), `${where}: rule 3 after the move`).toBeUndefined()
      expect(
        (online.replica.record('sync', 'generation') as { n: number } | undefined)?.n,
        where,
      ).toBe(server.generation.n)
    } finally {
      await online.close()
    }
    return state
  }

  it('restarts it on the old generation (it moves again) or the new one, its edits kept', async () => {
    const childOptions = (id: string): Record<string, unknown> => ({
      dataDir: dataDirOf(id),
      id,
      server: server.url,
      siteKey: SITE_KEY,
    })
    const dryId = 'M-dry'
    await prepared(dryId)
    const dry = await runChild(childOptions(dryId), moveScript)
    expect(dry.lines, dry.stderr).toContain('MOVED ok')
    const writes = dry.lines.filter((line) => line.startsWith('WRITE '))
    // The commit: the new document as a snapshot, the old log deleted, the
    // generation and sync records, in one write.
    const kinds = (write: string): string[] => (write.split(' ')[2] ?? '').split(',')
    const commit = ['+y/s', '+r/sync/generation', '+r/sync/state']
    expect(
      writes.filter((w) => commit.every((k) => kinds(w).includes(k))),
      writes.join('\n'),
    ).toHaveLength(1)

    const seen = new Set<string>()
    for (let n = 1; n <= writes.length; n++) {
      for (const when of ['before', 'after'] as const) {
        const id = `M${n}${when[0]}`
        const left = await prepared(id)
        const run = await runChild({ ...childOptions(id), stallAt: n, stallWhen: when }, moveScript)
        const where = `killed ${when} write ${n} (${run.stall ?? 'no stall'})`
        expect(run.stall, `${where}; stderr: ${run.stderr}`).toBeDefined()
        seen.add(await checkAfterCrash(id, left, where))
      }
    }
    expect([...seen].sort()).toEqual(['after', 'before'])
  }, 300_000)
})
