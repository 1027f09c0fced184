/**
 * The command line as a child process, for the CLI test files
 * (test/cli-operator.test.ts, test/cli-export.test.ts): temp dirs and
 * processes cleaned after each test (useCliFixtures), one-shot commands
 * (cli) and long-running ones (start, startServer).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterEach, expect } from 'vitest'
import { createDevice } from '../../peers/create-device.js'
import { openLevelStore } from '../../storage/level-store.js'
import { CLI_BIN } from './cli-run.js'

export const root = fileURLToPath(new URL('../..', import.meta.url))
/** The built package's command (test/global-setup.ts), as installed. */
export const BIN = CLI_BIN
/** The source checkout's command (through tsx): `bench` runs only there. */
export const SOURCE_BIN = join(root, 'bin/rostersync.js')
const dirs: string[] = []
const running: Proc[] = []
/** Registers the cleanup of the temp dirs and processes a test made (call once per file). */
export function useCliFixtures(): void {
  afterEach(async () => {
    for (const p of running.splice(0)) await p.stop()
    for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true })
  })
}

export async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'rostersync-cli-'))
  dirs.push(dir)
  return dir
}

export interface Result {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/** Runs one CLI command to its end. */
export function cli(
  args: string[],
  env: Record<string, string> = {},
  cwd = root,
  bin = BIN,
): Promise<Result> {
  const child = spawn(process.execPath, [bin, ...args], {
    cwd,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      ...process.env,
      ROSTERSYNC_SITE_KEY: '',
      ROSTERSYNC_ADMIN_TOKEN: '',
      ROSTERSYNC_EXPORT_PASSPHRASE: '',
      ...env,
    },
  })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()))
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()))
  return new Promise((resolve) => child.once('exit', (code) => resolve({ code, stdout, stderr })))
}

/** A long-running CLI process (server, device) whose output can be awaited. */
export class Proc {
  out = ''
  private readonly exited: Promise<void>
  constructor(readonly child: ChildProcess) {
    child.stdout?.on('data', (c: Buffer) => (this.out += c.toString()))
    child.stderr?.on('data', (c: Buffer) => (this.out += c.toString()))
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()))
  }
  /** Resolves with the first match of `pattern` in the output so far or to come. */
  async waitFor(pattern: RegExp, what: string): Promise<RegExpMatchArray> {
    for (;;) {
      const match = pattern.exec(this.out)
      if (match !== null) return match
      if (this.child.exitCode !== null) throw new Error(`exited before ${what}:\n${this.out}`)
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
  }
  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM')
    await this.exited
  }
}

export function start(args: string[], cwd = root): Proc {
  const proc = new Proc(
    spawn(process.execPath, [BIN, ...args], {
      cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ROSTERSYNC_SITE_KEY: '', ROSTERSYNC_ADMIN_TOKEN: '' },
    }),
  )
  running.push(proc)
  return proc
}

/** Starts `rostersync server` on a free port; resolves with its URLs. */
export async function startServer(
  data: string,
): Promise<{ proc: Proc; url: string; http: string; keyFingerprint: string }> {
  const proc = start(['server', '--data', data, '--port', '0', '--json'])
  const line = await proc.waitFor(/^\{.*"url".*\}$/m, 'the server listening')
  const info = JSON.parse(line[0]) as { url: string; http: string; keyFingerprint: string }
  return { proc, url: info.url, http: info.http, keyFingerprint: info.keyFingerprint }
}

/** Every file under a directory with its bytes (hex), to show nothing changed. */
export async function snapshot(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>()
  for (const entry of await readdir(dir, { recursive: true })) {
    const path = join(dir, entry)
    if ((await stat(path)).isFile()) out.set(entry, (await readFile(path)).toString('hex'))
  }
  return out
}

/** Every key and value of a LevelDB directory. */
export async function keysOf(dir: string): Promise<Map<string, string>> {
  const store = await openLevelStore(dir)
  const out = new Map<string, string>()
  for await (const [key, value] of store.range({ gte: '', lt: '\uffff' }))
    out.set(key, Buffer.from(value).toString('hex'))
  await store.close()
  return out
}

/** A refusal: non-zero exit and one line on stderr naming `code`. */
export function expectRefused(result: Result, code: string): void {
  expect(result.code).not.toBe(0)
  expect(result.stderr.trim().split('\n')).toHaveLength(1)
  expect(result.stderr).toContain(code)
}

/**
 * A device made offline, never synced (`device --status` on a new folder
 * made one; it now refuses a folder that holds no device).
 */
export async function offlineDevice(id: string, dataDir: string): Promise<void> {
  const device = await createDevice({ id, dataDir })
  await device.close()
}
