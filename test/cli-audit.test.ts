/**
 * What an operator's audit of the command line found (2026-12-06), through
 * the real CLI as child processes (LevelDB in temp dirs, 127.0.0.1 only):
 * offline commands refuse a directory that holds no server data instead of
 * making one there; user data cannot drive the operator's terminal; a
 * reader that stops early, an answer that is not a rostersync server's and
 * a token a header cannot carry each give one line (no stack trace, no
 * token); bytes are written the same way offline as through the server; a
 * flag given twice is refused; a device's key can be reset from the CLI.
 */
import { createServer as createHttpServer, type Server } from 'node:http'
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { expectOneLine, runCli as cli } from './helpers/cli-run.js'
import { createDevice } from '../peers/create-device.js'
import { createServer } from '../server-peer/create-server.js'

let dir = ''
/** A stopped server's data directory, with users and one registered device. */
let data = ''

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rostersync-cli-audit-'))
  data = join(dir, 'srv')
  const server = await createServer({
    dataDir: data,
    host: '127.0.0.1',
    port: 0,
    siteKey: 'cli-audit-key',
  })
  for (let i = 0; i < 300; i++) await server.users.put({ id: `u${i}`, name: `User ${i}` })
  await server.users.put({
    id: 'evil',
    name: '\u001b[2J\u001b[1;31mPWNED\u0007',
    department: 'row\nforged\u2028 row',
    title: 'abc\u202edcba',
  })
  const device = await createDevice({
    id: 'T1',
    dataDir: join(dir, 't1'),
    server: server.url,
    siteKey: 'cli-audit-key',
  })
  await device.sync.whenReady()
  await device.close()
  await server.close()
}, 60_000)

afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

describe('offline commands and data directories', () => {
  it('refuse an existing directory that holds no server data, and write nothing there', async () => {
    const empty = join(dir, 'empty')
    await mkdir(empty)
    const runs = await Promise.all(
      [['users', 'list'], ['devices', 'list'], ['events'], ['compact']].map((args) =>
        cli([...args, '--data', empty]),
      ),
    )
    for (const r of runs) expectOneLine(r, 1, /holds no rostersync server data/)
    expect(await readdir(empty)).toEqual([])
  }, 60_000)
})

describe('user data on the terminal', () => {
  it('escapes control, escape and bidi characters in tables and in users get', async () => {
    const list = await cli(['users', 'list', '--data', data])
    expect(list.code, list.stderr).toBe(0)
    // eslint-disable-next-line no-control-regex -- the point is that none is left
    expect(list.stdout).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u2028\u202e]/)
    expect(list.stdout).toContain('\\u001b[2J\\u001b[1;31mPWNED\\u0007')
    expect(list.stdout).toContain('row\\u000aforged')
    // One line per user, the header and the count: the newline forged no row.
    expect(list.stdout.trim().split('\n')).toHaveLength(301 + 2)
    for (const args of [
      ['users', 'get', 'evil', '--data', data],
      ['users', 'get', 'evil', '--data', data, '--json'],
    ]) {
      const got = await cli(args)
      expect(got.code, got.stderr).toBe(0)
      // eslint-disable-next-line no-control-regex -- the point is that none is left
      expect(got.stdout).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u2028\u202e]/)
      expect(got.stdout).toContain('\\u202e')
    }
  }, 60_000)
})

describe('one line, whatever goes wrong', () => {
  it('ends quietly, with 141, when the reader closes the pipe (| head)', async () => {
    // One after the other: both open the same data directory.
    for (const args of [
      ['users', 'list', '--data', data],
      ['events', '--data', data, '--json'],
    ]) {
      const r = await cli(args, true)
      expect(r.stderr).toBe('')
      // As a Unix tool killed by SIGPIPE: not all of it was read.
      expect(r.code).toBe(141)
    }
  }, 60_000)

  it('says so when what answers is not a rostersync server', async () => {
    const page: Server = createHttpServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/html' }).end('<html>router login</html>')
    })
    await new Promise<void>((resolve) => page.listen(0, '127.0.0.1', resolve))
    const base = `http://127.0.0.1:${(page.address() as AddressInfo).port}`
    try {
      const at = ['--server', base, '--token', 'some-token']
      const runs = await Promise.all(
        [
          ['users', 'list'],
          ['events'],
          ['devices', 'list'],
          ['export', '--users', 'u1', '--out', join(dir, 'x.rsx')],
        ].map((args) => cli([...args, ...at])),
      )
      for (const r of runs) expectOneLine(r, 1, /did not answer as a rostersync server/)
      expect((await readdir(dir)).includes('x.rsx')).toBe(false)
    } finally {
      await new Promise((resolve) => page.close(resolve))
    }
  }, 60_000)

  it('refuses a token a header cannot carry, without printing it', async () => {
    // Nothing listens on port 9 of 127.0.0.1: only the token decides how it ends.
    const listWith = (token: string): ReturnType<typeof cli> =>
      cli(['users', 'list', '--server', 'http://127.0.0.1:9', '--token', token])
    const r = await listWith('secret-part1\r\nsecret-part2')
    expectOneLine(r, 2, /admin token holds/)
    expect(r.stderr).not.toContain('secret-part')
    // Spaces inside a token are carried (a passphrase-like token): the
    // request is made, and fails to connect, not on the token.
    const spaced = await listWith('correct horse battery staple')
    expectOneLine(spaced, 1, /cannot reach the server/)
    // With why (a probe: "fetch failed" hid ECONNREFUSED, a bad port, ...).
    expect(spaced.stderr).toMatch(/fetch failed \(\w[^)]*\)/)
    expect(spaced.stderr).not.toContain('horse')
  })

  it('refuses a value flag given twice instead of keeping the last', async () => {
    // (--users and --groups may be given once per id: cli/export-command.ts.)
    const r = await cli(['export', '--data', data, '--out', 'a', '--out', 'b', '--users', 'u1'])
    expectOneLine(r, 2, /--out is given more than once/)
    expectOneLine(await cli(['events', '--data', data, '--limit', '20000']), 2, /--limit/)
  })
})

describe('offline writes and device keys', () => {
  it('takes bytes as { base64 } offline, as the HTTP API does', async () => {
    const add = await cli([
      'users',
      'add',
      '{"id":"ph","name":"Photo","photo":{"base64":"AAEC"}}',
      '--data',
      data,
    ])
    expect(add.code, add.stderr).toBe(0)
    const got = await cli(['users', 'get', 'ph', '--data', data, '--json'])
    expect(JSON.parse(got.stdout)).toMatchObject({ photo: { base64: 'AAEC' } })
  }, 60_000)

  it('resets a device key from the command line', async () => {
    const r = await cli(['devices', 'reset-key', 'T1', '--data', data])
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout).toMatch(/key unbound/)
    expectOneLine(await cli(['devices', 'reset-key', 'nobody', '--data', data]), 1, /nobody/)
  }, 60_000)
})
