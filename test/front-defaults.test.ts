/**
 * Secure defaults (issue 11): a server started without a site key makes
 * one (`<dataDir>/site-key`, mode 0600, reused on restart) and refuses
 * devices without it; an open site exists only when asked for, and says so
 * at start-up; the command line's start-up hint names the key's file, never
 * the key. Real LevelDB in temp dirs, WebSocket on 127.0.0.1, and the CLI
 * as a child process.
 */
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { createServer as createNetServer, type AddressInfo } from 'node:net'
import { WebSocket } from 'ws'
import { hasCode } from '../core/errors.js'
import { CloseCode } from '../core/protocol.js'
import { createServer, type ServerPeer } from '../server-peer/create-server.js'
import { memoryStore } from '../storage/level-store.js'

const opened: ServerPeer[] = []
const dirs: string[] = []
afterEach(async () => {
  for (const s of opened.splice(0)) await s.close()
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true })
})

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'rostersync-front-'))
  dirs.push(dir)
  return dir
}

/** Joins with `key` (or none); resolves with the close code, or 'open' once answered. */
function tryJoin(peer: ServerPeer, key: string | undefined): Promise<number | 'open'> {
  const query = new URLSearchParams({ device: 'D1', ...(key === undefined ? {} : { key }) })
  const ws = new WebSocket(`${peer.url}/roster?${query.toString()}`)
  return new Promise((resolve, reject) => {
    ws.once('open', () => ws.send(new Uint8Array([0, 0, 1, 0])))
    ws.once('message', () => {
      ws.close()
      resolve('open')
    })
    ws.once('close', (code) => resolve(code))
    ws.once('error', reject)
  })
}

describe('secure defaults: the site key', () => {
  it('is generated into <dataDir>/site-key (0600), reused on restart, and required', async () => {
    const dir = await tempDir()
    let server = await createServer({ dataDir: dir })
    opened.push(server)
    const file = join(dir, 'site-key')
    const key = (await readFile(file, 'utf8')).trim()
    expect(key.length).toBeGreaterThanOrEqual(32)
    expect((await stat(file)).mode & 0o777).toBe(0o600)
    expect(server.siteKey).toBe(key)
    expect(server.siteKeyFile).toBe(file)
    expect(await tryJoin(server, undefined)).toBe(CloseCode.authFailed)
    expect(await tryJoin(server, 'guess')).toBe(CloseCode.authFailed)
    expect(await tryJoin(server, key)).toBe('open')
    await server.close()
    opened.pop()
    server = await createServer({ dataDir: dir })
    opened.push(server)
    expect(server.siteKey).toBe(key)
  })

  it('warns when <dataDir>/site-key holds another key than the one given', async () => {
    const dir = await tempDir()
    const first = await createServer({ dataDir: dir })
    await first.close()
    const warnings: Error[] = []
    const listener = (w: Error): number => warnings.push(w)
    process.on('warning', listener)
    try {
      const given = await createServer({ dataDir: dir, siteKey: 'a-key-given-by-hand-0123456789' })
      opened.push(given)
      await new Promise((resolve) => setImmediate(resolve))
      expect(warnings.map((w) => (w as { code?: string }).code)).toContain(
        'ROSTERSYNC_STALE_SITE_KEY_FILE',
      )
      await given.close()
      opened.pop()
      // The same key in the file: nothing to say.
      warnings.length = 0
      const same = await createServer({ dataDir: dir, siteKey: first.siteKey as string })
      opened.push(same)
      await new Promise((resolve) => setImmediate(resolve))
      expect(warnings.map((w) => (w as { code?: string }).code)).not.toContain(
        'ROSTERSYNC_STALE_SITE_KEY_FILE',
      )
    } finally {
      process.off('warning', listener)
    }
  })

  it('a first start that cannot listen leaves no data directory behind, nor anything in an empty one', async () => {
    // A port in use had left a LevelDB, a site key and an admin token.
    const taken = createNetServer()
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve))
    try {
      const { port } = taken.address() as AddressInfo
      const parent = await tempDir()
      const absent = join(parent, 'not-yet')
      await expect(createServer({ dataDir: absent, port })).rejects.toSatisfy((e) =>
        hasCode(e, 'INVALID_OPTIONS'),
      )
      await expect(readdir(parent)).resolves.toEqual([])
      const empty = await tempDir()
      await expect(createServer({ dataDir: empty, port })).rejects.toSatisfy((e) =>
        hasCode(e, 'INVALID_OPTIONS'),
      )
      await expect(readdir(empty)).resolves.toEqual([])
    } finally {
      await new Promise((resolve) => taken.close(resolve))
    }
  })

  it('offline tools take the key the server last ran with, and a failed start changes nothing', async () => {
    const dir = await tempDir()
    const first = await createServer({ dataDir: dir })
    const key = first.siteKey as string
    await first.close()
    // A start that cannot listen (the port is taken) records nothing.
    const taken = createNetServer()
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve))
    try {
      const { port } = taken.address() as AddressInfo
      await expect(
        createServer({ dataDir: dir, siteKey: 'a-typo-of-the-site-key-012345', port }),
      ).rejects.toSatisfy((e) => hasCode(e, 'INVALID_OPTIONS'))
    } finally {
      await new Promise((resolve) => taken.close(resolve))
    }
    const offline = await createServer({ dataDir: dir, listen: false })
    expect(offline.siteKey).toBe(key)
    await offline.close()
    // Another key given offline (a variable left set) is refused; the right one is taken.
    await expect(
      createServer({ dataDir: dir, listen: false, siteKey: 'another-sites-key-0123456789' }),
    ).rejects.toSatisfy((e) => hasCode(e, 'AUTH_FAILED'))
    const same = await createServer({ dataDir: dir, listen: false, siteKey: key })
    expect(same.siteKey).toBe(key)
    await same.close()
  })

  it('is never made anew in silence: not after a key given, nor over a damaged file', async () => {
    // A probe: a server given a key, started once without it, made a new
    // one (every device refused, for good); an emptied site-key file was
    // overwritten with a new key.
    const dir = await tempDir()
    const given = 'a-key-given-by-hand-0123456789'
    const first = await createServer({ dataDir: dir, siteKey: given })
    await first.close()
    await expect(createServer({ dataDir: dir })).rejects.toSatisfy(
      (e) =>
        hasCode(e, 'INVALID_OPTIONS') && /last ran with a site key it was given/.test(String(e)),
    )
    expect(existsSync(join(dir, 'site-key'))).toBe(false)
    const again = await createServer({ dataDir: dir, siteKey: given })
    expect(again.siteKey).toBe(given)
    await again.close()

    const other = await tempDir()
    const made = await createServer({ dataDir: other })
    await made.close()
    for (const damaged of ['', 'short\n']) {
      await writeFile(join(other, 'site-key'), damaged)
      await expect(createServer({ dataDir: other })).rejects.toSatisfy(
        (e) => hasCode(e, 'INVALID_OPTIONS') && /holds no usable secret/.test(String(e)),
      )
      expect(await readFile(join(other, 'site-key'), 'utf8')).toBe(damaged)
    }
    // Gone (a restore that left it out): refused too, and no new one made.
    await rm(join(other, 'site-key'))
    await expect(createServer({ dataDir: other })).rejects.toSatisfy(
      (e) => hasCode(e, 'INVALID_OPTIONS') && /is gone/.test(String(e)),
    )
    expect(existsSync(join(other, 'site-key'))).toBe(false)
    // A damaged admin token refuses a listening server and lets its store
    // go (a second start is refused by the token, not by a held lock);
    // offline tools, which never read it, open the directory.
    await writeFile(join(other, 'site-key'), `${made.siteKey as string}\n`)
    await writeFile(join(other, 'admin-token'), 'x')
    for (let attempt = 0; attempt < 2; attempt++)
      await expect(createServer({ dataDir: other })).rejects.toSatisfy(
        (e) =>
          hasCode(e, 'INVALID_OPTIONS') && /admin-token holds no usable secret/.test(String(e)),
      )
    const offline = await createServer({ dataDir: other, listen: false })
    expect(offline.siteKey).toBe(made.siteKey)
    await offline.close()
  })

  it('is random and in memory only without a dataDir', async () => {
    const a = await createServer({ store: memoryStore() })
    const b = await createServer({ store: memoryStore() })
    opened.push(a, b)
    expect(a.siteKey).toBeDefined()
    expect(a.siteKey).not.toBe(b.siteKey)
    expect(await tryJoin(a, undefined)).toBe(CloseCode.authFailed)
  })

  it('an open site needs open: true, and excludes a siteKey', async () => {
    const server = await createServer({ store: memoryStore(), open: true })
    opened.push(server)
    expect(server.siteKey).toBeUndefined()
    expect(await tryJoin(server, undefined)).toBe('open')
    await expect(
      createServer({ store: memoryStore(), open: true, siteKey: 'k' }),
    ).rejects.toSatisfy((e) => hasCode(e, 'INVALID_OPTIONS'))
  })
})

/** Runs `rostersync server` until it prints its hint; returns what it printed. */
async function serverOutput(args: string[]): Promise<{ stdout: string; stderr: string }> {
  const child = spawn(process.execPath, ['bin/rostersync.js', 'server', '--port', '0', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stdout = ''
  let stderr = ''
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()))
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (c: Buffer) => {
      stdout += c.toString()
      if (stdout.includes('stop with Ctrl-C')) resolve()
    })
    child.once('exit', (code) => reject(new Error(`exited ${code}: ${stderr}`)))
  })
  const exited = new Promise((resolve) => child.once('exit', resolve))
  child.kill('SIGTERM')
  await exited
  return { stdout, stderr }
}

describe('secure defaults: the command line', () => {
  it('prints where the site key is and how to start a device with it, never the key', async () => {
    const dir = await tempDir()
    const { stdout } = await serverOutput(['--data', dir])
    const key = (await readFile(join(dir, 'site-key'), 'utf8')).trim()
    expect(stdout).toContain(`cat ${join(dir, 'site-key')}`)
    expect(stdout).toContain(`--site-key-file ${join(dir, 'site-key')}`)
    expect(stdout).not.toContain(key)
  })

  it('says loudly that a site is open (--open)', async () => {
    const dir = await tempDir()
    const { stdout, stderr } = await serverOutput(['--data', dir, '--open'])
    expect(stderr).toMatch(/WARNING: this site is OPEN/)
    // Once: not again as Node's warning with its --trace-warnings hint (a probe).
    expect(stderr.match(/OPEN/g)).toHaveLength(1)
    expect(stderr).not.toMatch(/trace-warnings/)
    expect(stdout).not.toContain('--site-key-file')
  })

  it('exits, the server closed, when it cannot write its server.json (it hung, listening)', async () => {
    const dir = await tempDir()
    const data = join(dir, 'data')
    await mkdir(join(data, 'server.json'), { recursive: true })
    const child = spawn(
      process.execPath,
      ['bin/rostersync.js', 'server', '--port', '0', '--data', data],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    )
    let stderr = ''
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()))
    const code = await new Promise((resolve) => child.once('exit', resolve))
    expect(code).toBe(1)
    expect(stderr).toMatch(/cannot write .*server\.json/)
  })

  it('warns of a short site key however it is given', async () => {
    const dir = await tempDir()
    const keyFile = join(dir, 'given-key')
    await writeFile(keyFile, 'abc\n')
    const { stderr } = await serverOutput(['--data', join(dir, 'a'), '--site-key', 'short'])
    expect(stderr).toMatch(/WARNING: the site key is 5 characters; use 16 or more/)
    const fromFile = await serverOutput(['--data', join(dir, 'b'), '--site-key-file', keyFile])
    expect(fromFile.stderr).toMatch(/WARNING: the site key is 3 characters; use 16 or more/)
  })
})
