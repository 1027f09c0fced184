/**
 * A SIGKILL at any store write of `server.compactHistory()` (a real child
 * process on LevelDB, test/fixtures/generation-child.ts) restarts the
 * server on the old generation or on the new one, whole: the same roster
 * either way, the generation record and the document agreeing (the new
 * generation's document holds no history, the old one's all of it).
 */
import { spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createServer } from '../server-peer/create-server.js'

const SITE_KEY = 'generation-crash-site-key'
const childScript = fileURLToPath(new URL('./fixtures/generation-child.ts', import.meta.url))
const projectRoot = fileURLToPath(new URL('..', import.meta.url))

let dir = ''
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rostersync-gen-crash-'))
})
afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

interface ChildRun {
  readonly lines: string[]
  readonly stall: string | undefined
  readonly stderr: string
}

/** Runs the child; it is killed with SIGKILL as soon as it prints its STALL line. */
function runChild(options: Record<string, unknown>): Promise<ChildRun> {
  const child = spawn(process.execPath, ['--import', 'tsx', childScript, JSON.stringify(options)], {
    cwd: projectRoot,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const lines: string[] = []
  let stall: string | undefined
  let stderr = ''
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()))
  createInterface({ input: child.stdout }).on('line', (line) => {
    lines.push(line)
    if (stall === undefined && line.startsWith('STALL ')) {
      stall = line
      child.kill('SIGKILL')
    }
  })
  return new Promise((resolve, reject) => {
    child.on('error', reject)
    child.on('close', () => resolve({ lines, stall, stderr }))
  })
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
