/**
 * No acknowledged write is lost on a crash: a real child process writes to a
 * real LevelDB and is killed with SIGKILL right after it acknowledged a
 * write; reopened, every acknowledged write is there. The Yjs clientID is
 * fresh after the crash and kept after a clean close.
 */
import { spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import { createDevice } from '../peers/create-device.js'

const writerScript = fileURLToPath(new URL('./fixtures/crash-writer.ts', import.meta.url))
const projectRoot = fileURLToPath(new URL('..', import.meta.url))
/** The device id the fixture uses (not imported: importing the fixture would run it). */
const deviceId = 'crash-dev'

interface ChildRun {
  readonly lines: string[]
  readonly signal: NodeJS.Signals | null
  readonly code: number | null
  readonly stderr: string
}

/**
 * Runs the writer; `killAfter` is asked about every line read and, once it
 * says yes, the child is killed with SIGKILL at once.
 */
function runWriter(
  dataDir: string,
  mode: 'write' | 'reopen',
  killAfter: (line: string) => boolean = () => false,
): Promise<ChildRun> {
  const child = spawn(process.execPath, ['--import', 'tsx', writerScript, dataDir, mode], {
    cwd: projectRoot,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const lines: string[] = []
  let stderr = ''
  let killed = false
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString()
  })
  createInterface({ input: child.stdout }).on('line', (line) => {
    lines.push(line)
    if (!killed && killAfter(line)) {
      killed = true
      child.kill('SIGKILL')
    }
  })
  return new Promise((resolve, reject) => {
    child.on('error', reject)
    // 'close' waits for stdout to end, so every line the child wrote is read.
    child.on('close', (code, signal) => resolve({ lines, signal, code, stderr }))
  })
}

const acked = (run: ChildRun): string[] =>
  run.lines.filter((line) => line.startsWith('ACK ')).map((line) => line.slice(4))

/** The `OPEN <kind> <clientId>` line of a run. */
function opened(run: ChildRun): { kind: string; clientId: number } {
  const line = run.lines.find((l) => l.startsWith('OPEN '))
  expect(line, `no OPEN line; stderr: ${run.stderr}`).toBeDefined()
  const [, kind = '', clientId = ''] = (line as string).split(' ')
  return { kind, clientId: Number(clientId) }
}

let dirs: string[] = []
afterEach(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true })
  dirs = []
})

describe.each([
  ['the first single write', (line: string) => line === 'ACK s-0'],
  ['a write of the 1,000-put batch', (line: string) => line.startsWith('ACK b-')],
  ['the 25th single write after the batch', (line: string) => line === 'ACK t-24'],
])('SIGKILL right after the ACK of %s', (_when, killAfter) => {
  it('loses no acknowledged write; the clientID is fresh after the crash, kept after a clean close', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'rostersync-crash-'))
    dirs.push(dir)

    const crashed = await runWriter(dir, 'write', killAfter)
    expect(crashed.signal, crashed.stderr).toBe('SIGKILL')
    const first = opened(crashed)
    expect(first.kind).toBe('new')
    const ids = acked(crashed)
    // The ACK that triggered the kill was read, so the test did crash mid-run.
    expect(ids.some((id) => killAfter(`ACK ${id}`))).toBe(true)
    expect(crashed.lines).not.toContain('DONE')

    const reopened = await runWriter(dir, 'reopen')
    expect(reopened.code, reopened.stderr).toBe(0)
    const second = opened(reopened)
    expect(second.kind).toBe('crash')
    expect(second.clientId).not.toBe(first.clientId)
    expect(reopened.lines).toContain('CLOSED')

    // In the parent, after the clean close: same clientID, every ACK there.
    const device = await createDevice({ id: deviceId, dataDir: dir })
    try {
      expect(device.replica.openKind).toBe('clean')
      expect(device.replica.clientId).toBe(second.clientId)
      const missing = ids.filter((id) => device.users.get(id)?.name !== `name-${id}`)
      expect(missing).toEqual([])
      const users = Number(reopened.lines.find((l) => l.startsWith('USERS '))?.slice(6))
      expect(users).toBe(device.users.list().length)
      expect(users).toBeGreaterThanOrEqual(ids.length)
    } finally {
      await device.close()
    }
  })
})
