/**
 * A command line an operator can trust (issue 10), through the real CLI as
 * child processes, real LevelDB in temp dirs, network on 127.0.0.1 only:
 * the start-up hint works when copied; a device's data directory is never
 * opened as a server's (refused, nothing changed); approval, compact; the
 * device command's LAN options and one-shot actions; bench. (Export and
 * import: test/cli-export.test.ts.)
 */
import { existsSync } from 'node:fs'
import { createServer as createNetServer, type AddressInfo } from 'node:net'
import { cp, unlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { limits } from '../core/limits.js'
import { createDevice } from '../peers/create-device.js'
import { createServer } from '../server-peer/create-server.js'
import { eventually } from './helpers/eventually.js'
import {
  cli,
  expectRefused,
  keysOf,
  offlineDevice,
  root,
  snapshot,
  SOURCE_BIN,
  start,
  startServer,
  tempDir,
  useCliFixtures,
  type Result,
} from './helpers/cli-operator.js'
import { ROLE_FILE } from '../peers/data-role.js'
import { openLevelStore } from '../storage/level-store.js'

useCliFixtures()

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

  it('takes the site key from --site-key-file, as its own refusals advise, and says so in the hint', async () => {
    // A probe: the server told an operator whose site-key file was gone to
    // give the new key with --site-key-file, which it did not take.
    const dir = await tempDir()
    const keyFile = join(dir, 'new-site-key')
    await writeFile(keyFile, 'a-new-site-key-of-enough-chars\n')
    expectRefused(
      await cli(['server', '--data', join(dir, 'x'), '--site-key-file', keyFile, '--open']),
      'exclude each other',
    )
    const server = start(
      ['server', '--data', 'srv', '--port', '0', '--site-key-file', keyFile],
      dir,
    )
    const hint = await server.waitFor(/start a device:\s+npx rostersync (.+)$/m, 'the hint')
    const args = (hint[1] ?? '').trim().split(/\s+/)
    expect(
      args.slice(args.indexOf('--site-key-file'), args.indexOf('--site-key-file') + 2),
    ).toEqual(['--site-key-file', keyFile])
    const device = start(args, await tempDir())
    await device.waitFor(/device D1: connected; server→device success/, 'the device admitted')
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
    // Approved once; again, it says there was nothing to approve (it said "approved").
    const approved = await cli(['devices', 'approve', 'T-5', '--data', srv])
    expect([approved.code, approved.stdout.trim()]).toEqual([0, 'device T-5 approved'])
    const again = await cli(['devices', 'approve', 'T-5', '--data', srv, '--json'])
    expect(JSON.parse(again.stdout)).toEqual({ ok: true, approved: false })
  }, 60_000)
})

describe("a copy of a running server's data directory (a hot backup)", () => {
  it('is worked on as itself, not through the live server its server.json names', async () => {
    // A probe: users added to, deleted from and compacted on the copy went
    // to the live site (the copy holds the live server's server.json).
    const dir = await tempDir()
    const live = join(dir, 'live')
    const { proc } = await startServer(live)
    expect(
      (await cli(['users', 'add', '{"id":"keep-me","name":"Keep"}', '--data', live])).code,
    ).toBe(0)
    const copy = join(dir, 'copy')
    await cp(live, copy, { recursive: true })
    expect(existsSync(join(copy, 'server.json'))).toBe(true)
    const added = await cli(['users', 'add', '{"id":"only-in-copy","name":"Copy"}', '--data', copy])
    expect(added.code).toBe(0)
    expect((await cli(['users', 'delete', 'keep-me', '--data', copy])).code).toBe(0)
    // The live site: unchanged.
    const liveUsers = await cli(['users', 'list', '--data', live, '--json'])
    expect(liveUsers.stdout).toMatch(/keep-me/)
    expect(liveUsers.stdout).not.toMatch(/only-in-copy/)
    await proc.stop()
    // The copy: changed.
    const copyUsers = await cli(['users', 'list', '--data', copy, '--json'])
    expect(copyUsers.stdout).toMatch(/only-in-copy/)
    expect(copyUsers.stdout).not.toMatch(/keep-me/)
  }, 120_000)
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
  // From the source checkout: the package has no bench/.
  const bench = (args: string[]): Promise<Result> => cli(args, {}, root, SOURCE_BIN)
  it('runs the bench runner, with one-line errors on bad flags', async () => {
    const unknown = await bench(['bench', '--only', 'nope'])
    expectRefused(unknown, 'unknown bench')
    // The help names every bench the runner knows.
    const known = /one of ([a-z0-9, ]+)/.exec(unknown.stderr)?.[1]?.split(', ') ?? []
    expect(known.length).toBeGreaterThan(10)
    const help = (await bench(['bench', '--help'])).stdout
    for (const name of known) expect(help).toMatch(new RegExp(`\\b${name}\\b`))
    expectRefused(await bench(['bench', '--users', '0']), '--users')
    expectRefused(await bench(['bench', '--bogus']), 'bogus')
    const result = await bench(['bench', '--only', 'signing', '--users', '50', '--json'])
    expect(result.code).toBe(0)
    const figures = JSON.parse(result.stdout.trim()) as Record<string, unknown>
    expect(figures).toHaveProperty('signing')
    expect(figures).toHaveProperty('users', 50)
    // The installed package says where the benchmarks are.
    expectRefused(await cli(['bench', '--only', 'signing']), 'need a source checkout')
  }, 120_000)
})
