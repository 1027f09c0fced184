/**
 * Edges of the command line a black-box probe found, through the real CLI
 * as child processes (real LevelDB in temp dirs, 127.0.0.1 only): every
 * error is one line, extra arguments are refused, a refused device's sync
 * names the refusal, `events` takes a period, a bad `sim --plan` is a bad
 * option (exit 2), a second server on one data directory says why.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  CLI_BIN as BIN,
  CLI_ENV as ENV,
  expectOneLine,
  PROJECT_ROOT as root,
  runCli as cli,
} from './helpers/cli-run.js'

let dir = ''
let data = ''
let url = ''
let server: ChildProcess | undefined

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rostersync-cli-edges-'))
  data = join(dir, 'srv')
  server = spawn(process.execPath, [BIN, 'server', '--data', data, '--port', '0', '--json'], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...ENV },
  })
  let out = ''
  server.stdout?.on('data', (c: Buffer) => (out += c.toString()))
  server.stderr?.on('data', (c: Buffer) => (out += c.toString()))
  for (let i = 0; i < 600 && !/"url"/.test(out); i++) await new Promise((r) => setTimeout(r, 50))
  const line = /^\{.*"url".*\}$/m.exec(out)
  if (line === null) throw new Error(`the server did not start:\n${out}`)
  url = (JSON.parse(line[0]) as { url: string }).url
}, 60_000)

afterAll(async () => {
  if (server !== undefined && server.exitCode === null) {
    const exited = new Promise((r) => server?.once('exit', r))
    server.kill('SIGTERM')
    await exited
  }
  await rm(dir, { recursive: true, force: true })
})

describe('the CLI on bad input', () => {
  it('prints a multi-line library error on one line (every problem kept)', async () => {
    const bad = await cli([
      'users',
      'add',
      '{"id":"u3","status":"weird","cards":[{"type":"x","value":"1"}]}',
      '--data',
      data,
    ])
    expectOneLine(bad, 1, /INVALID_RECORD.*status.*cards\[0\]\.type/)
    expectOneLine(await cli(['server', '--port', '-1', '--data', join(dir, 'x')]), 2, /--port/)
  })

  it('refuses an id-less record with INVALID_RECORD (not the HTTP route it would reach)', async () => {
    for (const record of ['{"name":"noid"}', '{"id":""}'])
      expectOneLine(await cli(['users', 'add', record, '--data', data]), 2, /INVALID_RECORD/)
  })

  it('refuses arguments no action takes', async () => {
    for (const args of [
      ['users', 'get', 'u1', 'u2'],
      ['users', 'list', 'extra'],
      ['users', 'add', '{"id":"u9"}', 'extra'],
      ['devices', 'list', 'extra'],
      ['devices', 'revoke', 'D1', 'D2'],
      ['events', 'extra'],
    ])
      expectOneLine(await cli([...args, '--data', data]), 2, /unexpected argument/)
    expectOneLine(await cli(['server', 'extra', '--port', '0', '--data', data]), 2, /unexpected/)
    // --name filters a list; an action on one id ignored it.
    expectOneLine(
      await cli(['devices', 'approve', 'T-1003', '--name', 'zzz', '--data', data]),
      2,
      /--name filters the list/,
    )
  })

  it('a bad sim --plan is a bad option: exit 2, one line', async () => {
    expectOneLine(await cli(['sim', '--plan', '[{"bad":1}]', '--devices', '2']), 2, /--plan/)
  })

  it('a run whose server crashes in the middle of a compaction ends with its report (a probe: it never exited)', async () => {
    const plan = '[{"at":600000,"op":"compact","value":1}]'
    const run = await cli(['sim', '--seed', '1', '--devices', '2', '--days', '0.1', '--plan', plan])
    expect(run.stdout).toMatch(/trace hash/)
    expect(run.code).toBe(0)
  }, 60_000)

  it('Ctrl-C on a run of a given seed says the seed and its replay (a probe: it said nothing)', async () => {
    const child = spawn(
      process.execPath,
      [BIN, 'sim', '--seed', '77', '--devices', '6', '--ops', '1000', '--days', '10'],
      { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] },
    )
    let stderr = ''
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()))
    const exited = new Promise<number | null>((resolve) => child.once('close', resolve))
    // Running: its progress shows.
    for (let i = 0; i < 200 && !/% run/.test(stderr); i++)
      await new Promise((resolve) => setTimeout(resolve, 50))
    child.kill('SIGINT')
    expect(await exited).toBe(130)
    expect(stderr).toMatch(
      /interrupted: seed 77; replay: npx rostersync sim --seed 77 --devices 6 --ops 1000 --days 10/,
    )
  }, 60_000)

  it('a second server on the same data directory says one is running there', async () => {
    expectOneLine(
      await cli(['server', '--data', data, '--port', '0']),
      1,
      /another process holds it \(is a server already running on it/,
    )
  })

  it('names a stale server.json when the server it names cannot be reached', async () => {
    // A server killed without cleaning up, its pid another live process's
    // by now (this one's): the message says what to do.
    const stale = join(dir, 'stale')
    await mkdir(stale)
    await writeFile(
      join(stale, 'server.json'),
      JSON.stringify({ url: 'ws://127.0.0.1:9', http: 'http://127.0.0.1:9', pid: process.pid }),
    )
    await writeFile(join(stale, 'admin-token'), 'a-token-of-enough-length-0123456789\n')
    expectOneLine(
      await cli(['users', 'list', '--data', stale]),
      1,
      /cannot reach the server at http:\/\/127\.0\.0\.1:9 \(named by .*server\.json: .*that file is stale; remove it\)/,
    )
  })

  it("`help <command>` prints that command's help", async () => {
    const help = await cli(['help', 'users'])
    expect(help.code).toBe(0)
    expect(help.stdout).toMatch(/^Usage: rostersync users/)
  })

  it('--version prints the package version', async () => {
    const { version } = JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as {
      version: string
    }
    const printed = await cli(['--version'])
    expect(printed.code).toBe(0)
    expect(printed.stdout.trim()).toBe(`rostersync ${version}`)
  })

  it('names the error code of a user or device that does not exist', async () => {
    expectOneLine(
      await cli(['users', 'get', 'nobody-here', '--data', data]),
      1,
      /^rostersync users: USER_NOT_FOUND: /,
    )
    expectOneLine(
      await cli(['devices', 'revoke', 'nobody-here', '--data', data]),
      1,
      /PEER_UNKNOWN/,
    )
  })
})

describe('the CLI takes what an operator means, or refuses (black-box probe)', () => {
  it('refuses ".", "..", bare numbers for durations and loose numbers, changing nothing', async () => {
    // "." and ".." through the running server's API: dot segments the URL
    // drops (`users get .` printed a page of users).
    for (const args of [
      ['users', 'get', '.'],
      ['users', 'delete', '..'],
      ['users', 'edit', '.', '{"name":"x"}'],
      ['devices', 'revoke', '.'],
    ])
      expectOneLine(await cli([...args, '--data', data]), 1, /INVALID_RECORD: invalid id/)
    // A number needs its unit (`--retention 10` was 10 ms); a bare short
    // number is no time (`--since 2026` was 2026 ms ago).
    expectOneLine(
      await cli(['device', '--id', 'T-9', '--data', join(dir, 't9'), '--retention', '10']),
      2,
      /needs a unit: 10ms, 10s, 10m, 10h or 10d/,
    )
    expectOneLine(await cli(['events', '--data', data, '--since', '2026']), 2, /--since/)
    expectOneLine(
      await cli(['device', '--id', 'T-9', '--data', join(dir, 't9'), '--delta-interval', '1ms']),
      2,
      /--delta-interval must be at least 1s/,
    )
    // A day the calendar lacks (read as 2 March), and a period that ends before it starts.
    expectOneLine(
      await cli(['events', '--data', data, '--since', '2026-02-30']),
      2,
      /--since: not a date or time/,
    )
    expectOneLine(
      await cli(['events', '--data', data, '--since', '1d', '--until', '2d']),
      2,
      /--since is after --until/,
    )
    const sinceMs = await cli(['events', '--data', data, '--since', String(Date.now() - 3_600_000)])
    expect(sinceMs.code, sinceMs.stderr).toBe(0)
    // Number() read "" as 0 (a random port), 0x10 as 16, 1e3 as 1000.
    expectOneLine(await cli(['server', '--port', '', '--data', join(dir, 'p')]), 2, /--port/)
    for (const limit of ['0x10', '1e3', ' 5'])
      expectOneLine(await cli(['events', '--data', data, '--limit', limit]), 2, /--limit/)
    expectOneLine(await cli(['sim', '--seed', '1', '--loss', '']), 2, /--loss/)
    // An empty site key is a mistake, not "no key".
    expectOneLine(
      await cli([
        'device',
        '--id',
        'T-7',
        '--data',
        join(dir, 't7'),
        '--server',
        url,
        '--site-key',
        '',
      ]),
      2,
      /--site-key is empty/,
    )
    // A look at a folder that holds no device does not make one.
    expectOneLine(
      await cli(['device', '--id', 'T-8', '--data', join(dir, 'typo'), '--list']),
      1,
      /no data directory/,
    )
    expect(existsSync(join(dir, 'typo'))).toBe(false)
    // A bad LAN peer is refused before the store is opened or the server joined.
    const lan = await cli([
      ...['device', '--id', 'T-6', '--data', join(dir, 't6'), '--server', url],
      ...['--site-key-file', join(data, 'site-key'), '--lan-peer', 'garbage', '--delta'],
    ])
    expectOneLine(lan, 1, /not a multiaddr/)
    expect(existsSync(join(dir, 't6'))).toBe(false)
    const devices = await cli(['devices', 'list', '--data', data, '--json'])
    expect(devices.stdout).not.toMatch(/T-6/)
  }, 120_000)
})

describe('the CLI against a running server', () => {
  it('names the refusal of a device: AUTH_FAILED for a wrong key, PEER_REVOKED once revoked', async () => {
    const wrong = await cli([
      'device',
      '--id',
      'DX',
      '--server',
      url,
      '--data',
      join(dir, 'dx'),
      '--site-key',
      'not-the-key',
      '--full',
    ])
    expectOneLine(wrong, 1, /AUTH_FAILED/)
    // Run until stopped (no --full / --delta): the refusal ends it, by code.
    const running = await cli([
      'device',
      '--id',
      'DZ',
      '--server',
      url,
      '--data',
      join(dir, 'dz'),
      '--site-key',
      'not-the-key',
    ])
    expectOneLine(running, 1, /refused this device: AUTH_FAILED/)
    const keyFile = join(data, 'site-key')
    const device = ['device', '--id', 'DY', '--server', url, '--data', join(dir, 'dy')]
    expect((await cli([...device, '--site-key-file', keyFile, '--full'])).code).toBe(0)
    for (let i = 0; i < 2; i++)
      expect((await cli(['devices', 'revoke', 'DY', '--data', data])).code).toBe(0)
    const refused = await cli([...device, '--site-key-file', keyFile, '--delta'])
    expectOneLine(refused, 1, /PEER_REVOKED/)
    // Why, not "PEER_REVOKED: undefined" (acceptance probe).
    expect(refused.stderr).not.toMatch(/undefined/)
    expect(running.stderr).not.toMatch(/undefined/)
    // Revoked twice, logged once.
    const events = await cli(['events', '--data', data, '--type', 'device-revoked', '--json'])
    expect(events.stdout.trim().split('\n')).toHaveLength(1)
    // The text form says what failed and why, as --json does.
    const failed = await cli(['events', '--data', data, '--type', 'sync-failed'])
    expect(failed.stdout).toMatch(/sync-failed\s+device=DY .*code=PEER_REVOKED — \S/)
    // --type again: events of either type (it kept only the last one).
    const either = await cli([
      ...['events', '--data', data, '--json'],
      ...['--type', 'device-revoked', '--type', 'sync-failed'],
    ])
    const types = either.stdout
      .trim()
      .split('\n')
      .map((line) => (JSON.parse(line) as { type: string }).type)
    expect(new Set(types)).toEqual(new Set(['device-revoked', 'sync-failed']))
  }, 60_000)

  it('a stopped device syncs again with the server it was last run with (no --server)', async () => {
    const keyFile = join(data, 'site-key')
    const dr = join(dir, 'dr')
    const first = await cli([
      'device',
      '--id',
      'DR',
      '--server',
      url,
      '--data',
      dr,
      '--site-key-file',
      keyFile,
      '--full',
    ])
    expect(first.code, first.stderr).toBe(0)
    // It tried ws://127.0.0.1:4400 (a probe), whatever port the server had.
    const again = await cli(['device', '--data', dr, '--site-key-file', keyFile, '--delta'])
    expect(again.code, again.stderr).toBe(0)
    expect(again.stdout).toMatch(/delta sync: done/)
  }, 60_000)

  it('events takes a period: --since and --until, as a time ago or an ISO time', async () => {
    const all = await cli(['events', '--data', data, '--json'])
    const times = all.stdout
      .trim()
      .split('\n')
      .map((line) => (JSON.parse(line) as { at: number }).at)
    expect(times.length).toBeGreaterThan(0)
    const first = new Date(Math.min(...times)).toISOString()
    const count = async (...args: string[]): Promise<number> => {
      const r = await cli(['events', '--data', data, '--json', ...args])
      expect(r.code, r.stderr).toBe(0)
      return r.stdout.trim() === '' ? 0 : r.stdout.trim().split('\n').length
    }
    expect(await count('--since', first)).toBe(times.length)
    expect(await count('--until', first)).toBe(0)
    expect(await count('--since', '2000-01-01', '--until', '1d')).toBe(0)
    // 0 is the epoch, as the HTTP API reads it: everything since, nothing before.
    expect(await count('--since', '0')).toBe(times.length)
    expect(await count('--until', '0')).toBe(0)
    expectOneLine(await cli(['events', '--data', data, '--until', 'yesterday']), 2, /--until/)
  }, 60_000)
})
