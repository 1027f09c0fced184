/**
 * A command line an operator can trust (issue 10), through the real CLI as
 * child processes, real LevelDB in temp dirs, network on 127.0.0.1 only:
 * the start-up hint works when copied; a device's data directory is never
 * opened as a server's (refused, nothing changed); export and import;
 * the device command's LAN options and one-shot actions; bench.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { createServer as createNetServer, type AddressInfo } from 'node:net'
import {
  chmod,
  lstat,
  mkdir,
  mkdtemp,
  open,
  readdir,
  readFile,
  rm,
  stat,
  symlink,
  unlink,
  writeFile,
} from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import { limits } from '../core/limits.js'
import { createDevice } from '../peers/create-device.js'
import { createServer } from '../server-peer/create-server.js'
import { eventually } from './helpers/eventually.js'
import { ROLE_FILE } from '../peers/data-role.js'
import { openLevelStore } from '../storage/level-store.js'

const root = fileURLToPath(new URL('..', import.meta.url))
const BIN = join(root, 'bin/rostersync.js')
const dirs: string[] = []
const running: Proc[] = []
afterEach(async () => {
  for (const p of running.splice(0)) await p.stop()
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true })
})

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'rostersync-cli-'))
  dirs.push(dir)
  return dir
}

interface Result {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/** Runs one CLI command to its end. */
function cli(args: string[], env: Record<string, string> = {}, cwd = root): Promise<Result> {
  const child = spawn(process.execPath, [BIN, ...args], {
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
class Proc {
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

function start(args: string[], cwd = root): Proc {
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
async function startServer(
  data: string,
): Promise<{ proc: Proc; url: string; http: string; keyFingerprint: string }> {
  const proc = start(['server', '--data', data, '--port', '0', '--json'])
  const line = await proc.waitFor(/^\{.*"url".*\}$/m, 'the server listening')
  const info = JSON.parse(line[0]) as { url: string; http: string; keyFingerprint: string }
  return { proc, url: info.url, http: info.http, keyFingerprint: info.keyFingerprint }
}

/** Every file under a directory with its bytes (hex), to show nothing changed. */
async function snapshot(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>()
  for (const entry of await readdir(dir, { recursive: true })) {
    const path = join(dir, entry)
    if ((await stat(path)).isFile()) out.set(entry, (await readFile(path)).toString('hex'))
  }
  return out
}

/** Every key and value of a LevelDB directory. */
async function keysOf(dir: string): Promise<Map<string, string>> {
  const store = await openLevelStore(dir)
  const out = new Map<string, string>()
  for await (const [key, value] of store.range({ gte: '', lt: '\uffff' }))
    out.set(key, Buffer.from(value).toString('hex'))
  await store.close()
  return out
}

/** A refusal: non-zero exit and one line on stderr naming `code`. */
function expectRefused(result: Result, code: string): void {
  expect(result.code).not.toBe(0)
  expect(result.stderr.trim().split('\n')).toHaveLength(1)
  expect(result.stderr).toContain(code)
}

/**
 * A device made offline, never synced (`device --status` on a new folder
 * made one; it now refuses a folder that holds no device).
 */
async function offlineDevice(id: string, dataDir: string): Promise<void> {
  const device = await createDevice({ id, dataDir })
  await device.close()
}

describe('rostersync --help', () => {
  it('lists every command, and each new command has --help', async () => {
    const help = await cli(['--help'])
    expect(help.code).toBe(0)
    for (const name of [
      'server',
      'device',
      'sim',
      'users',
      'devices',
      'events',
      'export',
      'import',
      'bench',
      'compact',
    ])
      expect(help.stdout).toMatch(new RegExp(`^  ${name} `, 'm'))
    for (const name of ['export', 'import', 'bench', 'device', 'compact']) {
      const result = await cli([name, '--help'])
      expect(result.code).toBe(0)
      expect(result.stdout).toContain(`Usage: rostersync ${name}`)
    }
    expect((await cli(['device', '--help'])).stdout).toMatch(/--lan-peer[\s\S]*--full[\s\S]*--list/)
  })
})

describe("the server's start-up hint", () => {
  it('is a command that admits the device when run as printed', async () => {
    const dir = await tempDir()
    const server = start(['server', '--data', 'srv', '--port', '0'], dir)
    const hint = await server.waitFor(/start a device:\s+npx rostersync (.+)$/m, 'the hint')
    const args = (hint[1] ?? '').trim().split(/\s+/)
    expect(args).toContain('--site-key-file')
    // Run from another directory: the key file's path must still hold.
    const elsewhere = await tempDir()
    const device = start(args, elsewhere)
    await device.waitFor(/device D1: connected; server→device success/, 'the device admitted')
    expect(device.out).not.toMatch(/refused|AUTH_FAILED/)
  }, 120_000)
})

describe("a device's data directory is never opened as a server's", () => {
  it('refuses users, devices, events and export on it, changing no byte', async () => {
    const dir = await tempDir()
    const dev = join(dir, 'dev')
    await offlineDevice('D7', dev)
    const made = await cli(['device', '--id', 'D7', '--data', dev, '--status', '--json'])
    expect(made.code).toBe(0)
    expect(JSON.parse(made.stdout)).toMatchObject({ device: 'D7', users: 0 })
    const before = await snapshot(dev)
    for (const args of [
      ['users', 'list'],
      ['users', 'get', 'u1'],
      ['users', 'add', '{"id":"u1","name":"Ann"}'],
      ['users', 'edit', 'u1', '{"name":"Bo"}'],
      ['users', 'delete', 'u1'],
      ['devices'],
      ['devices', 'revoke', 'D7'],
      ['events'],
      ['export', '--users', 'u1', '--out', join(dir, 'x.rsexport')],
    ]) {
      const result = await cli([...args, '--data', dev])
      expectRefused(result, 'WRONG_DATA_DIR')
    }
    expect(await snapshot(dev)).toEqual(before)
    expect(existsSync(join(dir, 'x.rsexport'))).toBe(false)
  }, 120_000)

  it('recognises a device directory made before roles existed by its keys', async () => {
    const dir = await tempDir()
    const dev = join(dir, 'dev')
    await offlineDevice('D8', dev)
    expect((await cli(['device', '--id', 'D8', '--data', dev, '--status'])).code).toBe(0)
    // As older versions left it: no role file, no role key.
    await unlink(join(dev, ROLE_FILE))
    const store = await openLevelStore(dev)
    await store.batch([{ type: 'del', key: 'm/role' }])
    await store.close()
    const before = await keysOf(dev)
    expectRefused(
      await cli(['users', 'edit', 'u1', '{"name":"Bo"}', '--data', dev]),
      'WRONG_DATA_DIR',
    )
    expectRefused(await cli(['events', '--data', dev]), 'WRONG_DATA_DIR')
    expect(await keysOf(dev)).toEqual(before)
    expect(existsSync(join(dev, 'admin-token'))).toBe(false)
    expect(existsSync(join(dev, 'site-key'))).toBe(false)
  }, 120_000)

  it('refuses a missing data directory instead of making a server there', async () => {
    const dir = await tempDir()
    const result = await cli(['users', 'list', '--data', join(dir, 'nope')])
    expect(result.code).toBe(1)
    expect(result.stderr.trim().split('\n')).toHaveLength(1)
    expect(existsSync(join(dir, 'nope'))).toBe(false)
  })
})

describe('approval from the command line', () => {
  it('shows the key fingerprint to compare, on the server (devices) and on the waiting device (--status)', async () => {
    // A probe: the fingerprint the approval asks to compare was only in --json.
    const dir = await tempDir()
    const srv = join(dir, 'srv')
    const server = await createServer({ dataDir: srv, port: 0, approveDevices: true })
    const device = await createDevice({
      id: 'T-5',
      dataDir: join(dir, 't5'),
      server: server.url,
      siteKey: server.siteKey as string,
    })
    await eventually(() =>
      expect(device.sync.status().deviceToServer.error?.code).toBe('PEER_PENDING'),
    )
    const fingerprint = device.keyFingerprint
    await device.close()
    await server.close()
    const listed = await cli(['devices', '--data', srv])
    expect(listed.code).toBe(0)
    expect(listed.stdout).toContain(`pending: T-5 key fingerprint ${fingerprint}`)
    const status = await cli(['device', '--data', join(dir, 't5'), '--status'])
    expect(status.code).toBe(0)
    expect(status.stdout).toContain(`waiting for approval: key fingerprint ${fingerprint}`)
    const json = await cli(['device', '--data', join(dir, 't5'), '--status', '--json'])
    expect(JSON.parse(json.stdout)).toMatchObject({ keyFingerprint: fingerprint })
  }, 60_000)
})

describe('rostersync compact', () => {
  it('starts a new generation through a running server, then on the stopped data directory', async () => {
    const dir = await tempDir()
    const srv = join(dir, 'srv')
    const { proc } = await startServer(srv)
    for (let i = 0; i < 5; i++)
      expect(
        (await cli(['users', 'add', `{"id":"u1","name":"Ann ${i}"}`, '--data', srv])).code,
      ).toBe(0)
    const online = await cli(['compact', '--data', srv, '--json'])
    expect(online.stderr).toBe('')
    expect(online.code).toBe(0)
    expect(JSON.parse(online.stdout)).toMatchObject({ generation: 1, devicesClosed: 0 })
    await proc.stop()
    const offline = await cli(['compact', '--data', srv])
    expect(offline.code).toBe(0)
    expect(offline.stdout).toMatch(/^generation 2: /)
    const events = await cli(['events', '--type', 'history-compacted', '--data', srv, '--json'])
    expect(events.code).toBe(0)
    expect(events.stdout.trim().split('\n')).toHaveLength(2)
    const users = await cli(['users', 'get', 'u1', '--data', srv, '--json'])
    expect(JSON.parse(users.stdout)).toMatchObject({ id: 'u1', name: 'Ann 4' })
    expectRefused(await cli(['compact', '--data', join(dir, 'nowhere')]), 'no data directory')
  }, 120_000)

  it('finishes on a stopped server whose roster takes more than one chunk to build', async () => {
    // A probe: past limits.generationBuildChunkEntries (the build yields on
    // the clock's unref'd timers) the process exited in the middle, printing
    // nothing, status 0, and nothing was compacted.
    const dir = await tempDir()
    const srv = join(dir, 'srv')
    const server = await createServer({ dataDir: srv, listen: false })
    for (let i = 0; i < limits.generationBuildChunkEntries + 100; i++)
      await server.users.put({ id: `c${i}`, name: `User ${i}` })
    await server.close()
    const offline = await cli(['compact', '--data', srv, '--json'])
    expect(offline.stderr).toBe('')
    expect(offline.code).toBe(0)
    expect(JSON.parse(offline.stdout)).toMatchObject({ generation: 1 })
    const events = await cli(['events', '--type', 'history-compacted', '--data', srv, '--json'])
    expect(events.stdout.trim().split('\n')).toHaveLength(1)
  }, 120_000)
})

describe('export and import', () => {
  it('takes an id with a comma escaped or alone, and refuses it unescaped when it is ambiguous', async () => {
    const dir = await tempDir()
    const srv = join(dir, 'srv')
    const { proc } = await startServer(srv)
    // An id with a comma: escaped, or given alone, it is one id; unescaped
    // while users "Smith" and "John" exist too, refused as ambiguous (a
    // probe: the two others were exported, status 0).
    for (const record of [
      '{"id":"Smith, John","name":"John Smith"}',
      '{"id":"Smith","name":"Other Smith"}',
      '{"id":"John","name":"Other John"}',
    ])
      expect((await cli(['users', 'add', record, '--data', srv])).code).toBe(0)
    const comma = join(dir, 'comma.rsexport')
    expectRefused(
      await cli(['export', '--users', 'Smith, John', '--out', comma, '--data', srv]),
      "is a user's id and a list of ids",
    )
    expect(existsSync(comma)).toBe(false)
    const escaped = await cli([
      'export',
      '--users',
      'Smith\\, John',
      '--users',
      'Smith',
      '--out',
      comma,
      '--data',
      srv,
      '--json',
    ])
    expect(escaped.code).toBe(0)
    expect(JSON.parse(escaped.stdout)).toMatchObject({ users: 2 })
    await proc.stop()
  }, 120_000)

  it('exports from a running server and imports into a stopped device', async () => {
    const dir = await tempDir()
    const srv = join(dir, 'srv')
    const key = join(srv, 'site-key')
    const { proc, url, keyFingerprint: fingerprint } = await startServer(srv)
    for (const record of [
      '{"id":"u1","name":"Ann","groups":["lobby"]}',
      '{"id":"u2","name":"Bo","groups":["lab"]}',
      '{"id":"u3","name":"Cy"}',
    ])
      expect((await cli(['users', 'add', record, '--data', srv])).code).toBe(0)
    const file = join(dir, 'lobby.rsexport')
    const exported = await cli([
      'export',
      '--groups',
      'lobby',
      '--users',
      'u3',
      '--out',
      file,
      '--data',
      srv,
      '--json',
    ])
    expect(exported.stderr).not.toMatch(/rostersync|Error/)
    expect(exported.code).toBe(0)
    expect(JSON.parse(exported.stdout)).toMatchObject({ file, users: 2, keySource: 'site-key' })
    // No passphrase given: encrypted under the site key, no passphrase printed.
    expect(JSON.parse(exported.stdout)).not.toHaveProperty('passphrase')
    expect((await readFile(file)).includes('Cy')).toBe(false)
    // --generate-passphrase: one is generated and printed once.
    const locked = join(dir, 'locked.rsexport')
    const generated = await cli([
      'export',
      '--users',
      'u1',
      '--out',
      locked,
      '--generate-passphrase',
      '--data',
      srv,
      '--json',
    ])
    expect(generated.code).toBe(0)
    const { passphrase, keySource } = JSON.parse(generated.stdout) as Record<string, string>
    expect(keySource).toBe('passphrase')
    expect(passphrase).toMatch(/^[0-9A-Z]{4}(-[0-9A-Z]{4}){5}$/)
    const passFile = join(dir, 'passphrase')
    await writeFile(passFile, `${passphrase}\n`, { mode: 0o600 })
    expectRefused(
      await cli(['export', '--users', 'u1', '--out', join(dir, 'a'), '--generate-passphrase'], {
        ROSTERSYNC_EXPORT_PASSPHRASE: 'a passphrase the operator chose',
      }),
      '--generate-passphrase excludes',
    )
    expect((await stat(file)).mode & 0o777).toBe(0o600)
    // Bad exports: one line, non-zero, no file.
    expectRefused(
      await cli(['export', '--out', join(dir, 'a'), '--data', srv]),
      'name what to export',
    )
    expectRefused(await cli(['export', '--users', 'u1', '--data', srv]), '--out')
    expectRefused(
      await cli(['export', '--users', 'nobody', '--out', join(dir, 'b'), '--data', srv]),
      'USER_NOT_FOUND',
    )
    expectRefused(await cli(['export', '--users', 'u1', '--out', file, '--data', srv]), 'exists')
    // A file that cannot be written is refused before the export: no
    // `users-exported` is logged for it.
    const exports = async (): Promise<number> =>
      (await cli(['events', '--data', srv, '--type', 'users-exported', '--json'])).stdout
        .split('\n')
        .filter((line) => line.trim() !== '').length
    const before = await exports()
    expectRefused(
      await cli(['export', '--users', 'u1', '--out', join(dir, 'nodir', 'x'), '--data', srv]),
      'cannot write',
    )
    expect(await exports()).toBe(before)
    // --force replaces the file with a new one: 0600 whatever the old one's mode.
    const loose = join(dir, 'loose.rsexport')
    await writeFile(loose, 'old')
    await chmod(loose, 0o644)
    expectRefused(
      await cli(['export', '--users', 'u1', '--out', loose, '--force', '--data', srv], {
        ROSTERSYNC_EXPORT_PASSPHRASE: 'too short',
      }),
      'EXPORT_PASSPHRASE_INVALID',
    )
    const forced = await cli(
      ['export', '--users', 'u1', '--out', loose, '--force', '--data', srv],
      { ROSTERSYNC_EXPORT_PASSPHRASE: 'a passphrase the operator chose' },
    )
    expect(forced.code).toBe(0)
    expect(forced.stdout).not.toMatch(/passphrase:/)
    expect(forced.stdout).toMatch(/encrypted under the passphrase/)
    expect((await stat(loose)).mode & 0o777).toBe(0o600)
    expect(existsSync(join(dir, 'a')) || existsSync(join(dir, 'b'))).toBe(false)

    // A new device's folder is made by the import (with --id), and is gone
    // again when the import is refused (a probe: "no data directory").
    const fresh = join(dir, 'fresh')
    expectRefused(await cli(['import', file, '--data', fresh]), 'give --id')
    expectRefused(
      await cli(['import', file, '--data', fresh, '--id', 'D3', '--site-key-file', key]),
      'AUTH_FAILED',
    )
    expect(existsSync(fresh)).toBe(false)
    const made = await cli([
      ...['import', file, '--data', fresh, '--id', 'D3', '--site-key-file', key],
      ...['--server-key', fingerprint, '--json'],
    ])
    expect(made.code, made.stderr).toBe(0)
    expect(JSON.parse(made.stdout)).toMatchObject({ imported: 2 })
    expect((await stat(fresh)).mode & 0o777).toBe(0o700)

    const dev = join(dir, 'dev')
    await offlineDevice('D2', dev)
    expect((await cli(['device', '--id', 'D2', '--data', dev, '--status'])).code).toBe(0)
    // A device never admitted takes the file only on the server key's
    // fingerprint (the site key alone is every device's).
    expectRefused(await cli(['import', file, '--data', dev]), 'AUTH_FAILED')
    expectRefused(await cli(['import', file, '--data', dev, '--site-key-file', key]), 'AUTH_FAILED')
    const importArgs = ['import', file, '--data', dev, '--site-key-file', key]
    // The file is encrypted under the site key: the device needs it, no passphrase.
    expectRefused(
      await cli(['import', file, '--data', dev, '--server-key', fingerprint]),
      'EXPORT_SITE_KEY_REQUIRED',
    )
    const imported = await cli([...importArgs, '--server-key', fingerprint, '--json'])
    expect(imported.stderr).not.toMatch(/rostersync|Error/)
    expect(imported.code).toBe(0)
    expect(JSON.parse(imported.stdout)).toMatchObject({ imported: 2, unchanged: 0 })
    // A file exported with a passphrase needs it (a file, or the environment).
    const lockedArgs = ['import', locked, '--data', dev, '--site-key-file', key, '--json']
    expectRefused(await cli(lockedArgs), 'EXPORT_PASSPHRASE_INVALID')
    const opened = await cli([...lockedArgs, '--passphrase-file', passFile])
    expect(opened.code).toBe(0)
    expect(JSON.parse(opened.stdout)).toMatchObject({ imported: 0, unchanged: 1 })
    const byEnv = await cli(['import', loose, '--data', dev, '--site-key-file', key], {
      ROSTERSYNC_EXPORT_PASSPHRASE: 'a passphrase the operator chose',
    })
    expect(byEnv.code).toBe(0)
    // A look never connects: a --server given with it is neither checked
    // nor kept for the device's next start.
    const listed = await cli(['device', '--data', dev, '--list', '--json', '--server', 'notaurl'])
    expect(existsSync(join(dev, 'server-url'))).toBe(false)
    expect(
      listed.stdout
        .trim()
        .split('\n')
        .map((l) => (JSON.parse(l) as { id: string }).id),
    ).toEqual(['u1', 'u3'])
    // Bad imports: one line, non-zero.
    expectRefused(await cli(['import', '--data', dev]), 'export file is required')
    expectRefused(await cli(['import', join(dir, 'missing'), '--data', dev]), 'cannot read')
    // A device file says size 0 and never ends: counted as read (it grew
    // the process to 4.8 GB in 12 s).
    expectRefused(
      await cli(['import', '/dev/zero', '--data', dev, '--site-key-file', key]),
      'MESSAGE_TOO_LARGE',
    )
    expectRefused(
      await cli(['import', file, '--data', srv, '--site-key-file', key]),
      'WRONG_DATA_DIR',
    )
    expectRefused(
      await cli(['import', key, '--data', dev, '--site-key-file', key]),
      'MALFORMED_MESSAGE',
    )

    // The device's actions: full and delta syncs, status, list.
    const full = await cli([
      'device',
      '--data',
      dev,
      '--server',
      url,
      '--site-key-file',
      key,
      '--full',
      '--delta',
      '--status',
      '--json',
    ])
    expect(full.stderr).not.toMatch(/rostersync|Error/)
    expect(full.code).toBe(0)
    const lines = full.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>)
    expect(lines.slice(0, 2)).toEqual([
      { sync: 'full', ok: true },
      { sync: 'delta', ok: true },
    ])
    expect(lines[2]).toMatchObject({ device: 'D2', offlineReady: true, users: 3 })
    const table = await cli(['device', '--data', dev, '--list'])
    expect(table.stdout).toMatch(/^u2\s+Bo/m)
    expect(table.stdout).toContain('3 user(s)')

    // Offline export: the server stopped, its directory opened directly.
    await proc.stop()
    const offline = await cli([
      'export',
      '--users',
      'u2',
      '--out',
      join(dir, 'u2.rsexport'),
      '--data',
      srv,
    ])
    expect(offline.code).toBe(0)
    expect(offline.stdout).toMatch(/exported 1 user\(s\)/)
  }, 180_000)
})

describe('export from a stopped server', () => {
  it('uses the site key the server ran with, never makes one; --force replaces only files; --out - is standard output', async () => {
    const dir = await tempDir()
    const srv = join(dir, 'srv')
    const siteKey = 'the-site-key-the-operator-keeps-0123456789'
    const proc = start(['server', '--data', srv, '--port', '0', '--json', '--site-key', siteKey])
    const info = JSON.parse(
      (await proc.waitFor(/^\{.*"url".*\}$/m, 'the server listening'))[0],
    ) as { keyFingerprint: string }
    expect((await cli(['users', 'add', '{"id":"u1","name":"Ann"}', '--data', srv])).code).toBe(0)
    await proc.stop()
    const file = join(dir, 'u1.rsexport')
    const args = ['export', '--users', 'u1', '--data', srv]
    // The key was given at start: not in the directory, so it must be given
    // again (a key made up here would be no device's), or a passphrase.
    expectRefused(await cli([...args, '--out', file]), 'EXPORT_SITE_KEY_REQUIRED')
    expect(existsSync(join(srv, 'site-key'))).toBe(false)
    expectRefused(
      await cli([...args, '--out', file, '--site-key', 'another-key-of-enough-length-0123']),
      'AUTH_FAILED',
    )
    expect(existsSync(file)).toBe(false)
    const made = await cli([...args, '--out', file, '--json'], { ROSTERSYNC_SITE_KEY: siteKey })
    expect(made.code).toBe(0)
    expect(JSON.parse(made.stdout)).toMatchObject({ users: 1, keySource: 'site-key' })
    expect(existsSync(join(srv, 'site-key'))).toBe(false)
    // --force replaces a file, never what a link names, nor a folder.
    const target = join(dir, 'precious.txt')
    await writeFile(target, 'precious')
    const link = join(dir, 'link.rsexport')
    await symlink(target, link)
    const env = { ROSTERSYNC_SITE_KEY: siteKey }
    expectRefused(await cli([...args, '--out', link, '--force'], env), 'not a file')
    expect((await lstat(link)).isSymbolicLink()).toBe(true)
    expect(await readFile(target, 'utf8')).toBe('precious')
    expectRefused(await cli([...args, '--out', dir, '--force'], env), 'not a file')
    // --out -: the file on standard output, what was written on standard error.
    const piped = join(dir, 'piped.rsexport')
    const out = await open(piped, 'w')
    const child = spawn(process.execPath, [BIN, ...args, '--out', '-'], {
      cwd: root,
      stdio: ['ignore', out.fd, 'pipe'],
      env: { ...process.env, ROSTERSYNC_ADMIN_TOKEN: '', ROSTERSYNC_SITE_KEY: siteKey },
    })
    let stderr = ''
    child.stderr?.on('data', (c: Buffer) => (stderr += c.toString()))
    const code = await new Promise((resolve) => child.once('exit', resolve))
    await out.close()
    expect(code).toBe(0)
    expect(stderr).toMatch(/exported 1 user\(s\) to standard output/)
    // A refused file leaves a folder that held no device as it was.
    const fresh = join(dir, 'fresh')
    // Private: a folder others can read that holds other files is warned of.
    await mkdir(fresh, { mode: 0o700 })
    await writeFile(join(fresh, 'notes.txt'), 'kept')
    expectRefused(
      await cli(['import', file, '--data', fresh, '--id', 'D9'], { ROSTERSYNC_SITE_KEY: siteKey }),
      'AUTH_FAILED',
    )
    expect(await readdir(fresh)).toEqual(['notes.txt'])
    // A device from before role files (a database, no role file) is no
    // fresh folder: a refused file leaves its data whole.
    const old = join(dir, 'old-device')
    await offlineDevice('D8', old)
    await unlink(join(old, ROLE_FILE))
    expectRefused(
      await cli(['import', file, '--data', old, '--id', 'D8'], { ROSTERSYNC_SITE_KEY: siteKey }),
      'AUTH_FAILED',
    )
    const reopened = await createDevice({ id: 'D8', dataDir: old })
    await reopened.close()
    // Both files open on a device of the site; `import -` reads standard input.
    const dev = join(dir, 'dev')
    await offlineDevice('D1', dev)
    const fromStdin = spawn(
      process.execPath,
      [BIN, 'import', '-', '--data', dev, '--server-key', info.keyFingerprint, '--json'],
      {
        cwd: root,
        stdio: [(await open(piped, 'r')).fd, 'pipe', 'pipe'],
        env: { ...process.env, ROSTERSYNC_ADMIN_TOKEN: '', ROSTERSYNC_SITE_KEY: siteKey },
      },
    )
    let fromStdinOut = ''
    fromStdin.stdout?.on('data', (c: Buffer) => (fromStdinOut += c.toString()))
    expect(await new Promise((resolve) => fromStdin.once('exit', resolve))).toBe(0)
    expect(JSON.parse(fromStdinOut)).toMatchObject({ imported: 1 })
    for (const exported of [file, piped]) {
      const imported = await cli(
        ['import', exported, '--data', dev, '--server-key', info.keyFingerprint, '--json'],
        { ROSTERSYNC_SITE_KEY: siteKey },
      )
      expect(imported.stderr).toBe('')
      expect(imported.code).toBe(0)
    }
  })
})

describe('the device command on the LAN', () => {
  it('relays what the server sends over --lan-peer to a periodic device', async () => {
    const dir = await tempDir()
    const srv = join(dir, 'srv')
    const key = join(srv, 'site-key')
    const { url } = await startServer(srv)
    expect((await cli(['users', 'add', '{"id":"u1","name":"Ann"}', '--data', srv])).code).toBe(0)
    const a = start([
      'device',
      '--id',
      'A',
      '--data',
      join(dir, 'a'),
      '--server',
      url,
      '--site-key-file',
      key,
      '--lan-host',
      '127.0.0.1',
    ])
    const address = (await a.waitFor(/LAN: listening on (\S+)/, "A's LAN address"))[1] ?? ''
    expect(address).toMatch(/^\/ip4\/127\.0\.0\.1\/tcp\/\d+\/p2p\//)
    await a.waitFor(/device A: connected; server→device success.*1 user/, 'A synced')
    // The fingerprint the terminal shows is the one the registry shows.
    const shown = (await a.waitFor(/key fingerprint: (SHA256:\S+)/, "A's key"))[1]
    const registry = await cli(['devices', '--data', srv, '--json'])
    expect(registry.stdout).toContain(`"keyFingerprint":"${shown ?? '-'}"`)
    // B is periodic (the server forwards it nothing between its daily
    // syncs): a user added now reaches it through A, over the LAN.
    const b = start([
      'device',
      '--id',
      'B',
      '--data',
      join(dir, 'b'),
      '--server',
      url,
      '--mode',
      'periodic',
      '--delta-interval',
      '1d',
      '--site-key-file',
      key,
      '--lan-peer',
      address,
    ])
    await b.waitFor(/device B: connected; server→device success.*1 user/, 'B synced')
    expect((await cli(['users', 'add', '{"id":"u2","name":"Bo"}', '--data', srv])).code).toBe(0)
    await b.waitFor(/device B: .*; 2 user\(s\)/, 'B has u2 from A')
    // The operator's syncs on a running device: SIGUSR2 a delta, SIGUSR1 a full one.
    b.child.kill('SIGUSR2')
    await b.waitFor(/delta sync: done/, "B's delta sync")
    b.child.kill('SIGUSR1')
    await b.waitFor(/full sync: done/, "B's full sync")
    expectRefused(
      await cli(['device', '--id', 'C', '--data', join(dir, 'c'), '--lan-peer', address]),
      'site key',
    )
  }, 120_000)
})

describe('the device command while its server is down', () => {
  it('prints why it is waiting and when it will try again, in text and in JSON', async () => {
    const dir = await tempDir()
    // A port nothing listens on: taken from the system, then released.
    const probe = createNetServer()
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve))
    const port = (probe.address() as AddressInfo).port
    await new Promise((resolve) => probe.close(resolve))
    const server = `ws://127.0.0.1:${port}`
    const startedAt = Date.now()
    const args = (id: string) =>
      [
        'device',
        '--id',
        id,
        '--data',
        join(dir, id),
        '--server',
        server,
        '--site-key',
        'k',
      ] as const
    const text = start([...args('D1')])
    const json = start([...args('D2'), '--json'])
    const waitLine = /waiting: (.*); next attempt at (\S+) \(in (\d+) s\)/
    const first = await text.waitFor(waitLine, 'the first wait line')
    expect(first[1]).toContain('ECONNREFUSED')
    const firstAt = Date.parse(first[2] ?? '')
    expect(firstAt).toBeGreaterThan(startedAt)
    // Each failed attempt is reported with the next one's time, later each time.
    await text.waitFor(
      /waiting: .*; next attempt at (\S+)[\s\S]*waiting: .*; next attempt at (\S+)/,
      'a second wait line',
    )
    const times = [...text.out.matchAll(new RegExp(waitLine, 'g'))].map((m) =>
      Date.parse(m[2] ?? ''),
    )
    expect(times.length).toBeGreaterThanOrEqual(2)
    expect(times[1]).toBeGreaterThan(times[0] ?? Infinity)
    expect(text.out).toContain('device D1: disconnected')
    // The same in JSON: the reason and the time of the next attempt, ms since the epoch.
    const line = await json.waitFor(/^\{"device":"D2".*"nextAttemptAt".*\}$/m, 'a JSON wait line')
    const state = JSON.parse(line[0]) as { link: string; waiting: string; nextAttemptAt: number }
    expect(state.link).toBe('disconnected')
    expect(state.waiting).toContain('ECONNREFUSED')
    expect(state.nextAttemptAt).toBeGreaterThan(startedAt)
  }, 60_000)
})

describe('rostersync bench', () => {
  it('runs the bench runner, with one-line errors on bad flags', async () => {
    const unknown = await cli(['bench', '--only', 'nope'])
    expectRefused(unknown, 'unknown bench')
    // The help names every bench the runner knows.
    const known = /one of ([a-z0-9, ]+)/.exec(unknown.stderr)?.[1]?.split(', ') ?? []
    expect(known.length).toBeGreaterThan(10)
    const help = (await cli(['bench', '--help'])).stdout
    for (const name of known) expect(help).toMatch(new RegExp(`\\b${name}\\b`))
    expectRefused(await cli(['bench', '--users', '0']), '--users')
    expectRefused(await cli(['bench', '--bogus']), 'bogus')
    const result = await cli(['bench', '--only', 'signing', '--users', '50', '--json'])
    expect(result.code).toBe(0)
    const figures = JSON.parse(result.stdout.trim()) as Record<string, unknown>
    expect(figures).toHaveProperty('signing')
    expect(figures).toHaveProperty('users', 50)
  }, 120_000)
})
