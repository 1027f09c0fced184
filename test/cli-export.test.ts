/**
 * Export and import through the real CLI (issue 10), as child processes,
 * real LevelDB in temp dirs, network on 127.0.0.1 only: from a running
 * server and from a stopped one, into a stopped device, and the refusals.
 */
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import {
  chmod,
  lstat,
  mkdir,
  open,
  readdir,
  readFile,
  stat,
  symlink,
  unlink,
  writeFile,
} from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { createDevice } from '../peers/create-device.js'
import {
  cli,
  expectRefused,
  offlineDevice,
  root,
  start,
  startServer,
  tempDir,
  useCliFixtures,
  BIN,
} from './helpers/cli-operator.js'
import { ROLE_FILE } from '../peers/data-role.js'

useCliFixtures()

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
