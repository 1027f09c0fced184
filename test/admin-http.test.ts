/**
 * The admin page's side of the HTTP API over real HTTP on 127.0.0.1:
 * sign-in and sign-out with the session cookie (its flags, its expiry, the
 * bounded number of sessions), CSRF refusals, the Bearer token unchanged,
 * server-side search and filters over pages, the sources of fields, field
 * policies with the consequence of a change, live updates (server-sent
 * events) and the page's own files.
 */
import { request } from 'node:http'
import { afterEach, describe, expect, it } from 'vitest'
import { EVENT_TYPES } from '../core/events.js'
import { netLimits } from '../core/limits.js'
import { createDevice, type DevicePeer } from '../peers/create-device.js'
import { createServer, type ServerPeer } from '../server-peer/create-server.js'
import { memoryStore } from '../storage/level-store.js'
import { eventually } from './helpers/eventually.js'
import { ManualClock } from './helpers/manual-clock.js'

const closers: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close().catch(() => undefined)
})

async function server(options: { clock?: ManualClock } = {}): Promise<ServerPeer> {
  const peer = await createServer({ store: memoryStore(), ...options })
  closers.push(() => peer.close())
  return peer
}

interface Answer {
  status: number
  headers: Headers
  body: Record<string, unknown>
}

async function call(
  peer: ServerPeer,
  method: string,
  path: string,
  options: {
    cookie?: string
    csrf?: boolean
    body?: unknown
    headers?: Record<string, string>
  } = {},
): Promise<Answer> {
  const headers: Record<string, string> = { ...options.headers }
  if (options.cookie !== undefined) headers.cookie = options.cookie
  if (options.csrf === true) headers['x-rostersync-csrf'] = '1'
  if (options.body !== undefined) headers['content-type'] = 'application/json'
  const res = await fetch(`${peer.http}${path}`, {
    method,
    headers,
    ...(options.body === undefined ? {} : { body: JSON.stringify(options.body) }),
  })
  const text = await res.text()
  return {
    status: res.status,
    headers: res.headers,
    body: text === '' ? {} : (JSON.parse(text) as Record<string, unknown>),
  }
}

/** Signs in; returns the `name=value` cookie to send back. */
async function signIn(peer: ServerPeer): Promise<string> {
  const res = await call(peer, 'POST', '/api/session', {
    csrf: true,
    body: { token: peer.adminToken },
  })
  expect(res.status).toBe(200)
  const setCookie = res.headers.get('set-cookie') ?? ''
  return setCookie.split(';')[0] ?? ''
}

const codeOf = (a: Answer): unknown => (a.body.error as { code?: unknown } | undefined)?.code
const messageOf = (a: Answer): string =>
  String((a.body.error as { message?: unknown } | undefined)?.message)

describe('admin page sessions', () => {
  it('signs in with the token in the body, sets an HttpOnly SameSite=Strict cookie, signs out', async () => {
    const peer = await server()
    const wrong = await call(peer, 'POST', '/api/session', {
      csrf: true,
      body: { token: 'not-the-admin-token' },
    })
    expect(wrong.status).toBe(401)
    expect(codeOf(wrong)).toBe('AUTH_FAILED')
    expect(wrong.headers.get('set-cookie')).toBeNull()

    const res = await call(peer, 'POST', '/api/session', {
      csrf: true,
      body: { token: peer.adminToken },
    })
    expect(res.status).toBe(200)
    const setCookie = res.headers.get('set-cookie') ?? ''
    expect(setCookie).toMatch(/^rostersync_session=[A-Za-z0-9_-]{43};/)
    for (const flag of ['HttpOnly', 'SameSite=Strict', 'Path=/', 'Max-Age='])
      expect(setCookie).toContain(flag)
    expect(setCookie).not.toContain(peer.adminToken)
    const cookie = setCookie.split(';')[0] ?? ''

    expect((await call(peer, 'GET', '/api/session', { cookie })).body).toMatchObject({
      signedIn: true,
    })
    expect((await call(peer, 'GET', '/api/session')).body).toEqual({ signedIn: false })
    expect((await call(peer, 'GET', '/api/users', { cookie })).status).toBe(200)

    const out = await call(peer, 'DELETE', '/api/session', { cookie, csrf: true })
    expect(out.status).toBe(200)
    expect(out.headers.get('set-cookie')).toContain('Max-Age=0')
    const after = await call(peer, 'GET', '/api/users', { cookie })
    expect(after.status).toBe(401)
    expect(codeOf(after)).toBe('AUTH_FAILED')
  })

  it('finds the session among several cookies of its name (one set by a page on another port of the host)', async () => {
    const peer = await server()
    const cookie = await signIn(peer)
    // Cookies ignore ports: another page of 127.0.0.1 set a bogus one, sent first.
    const tossed = `rostersync_session=bogus; ${cookie}`
    expect((await call(peer, 'GET', '/api/session', { cookie: tossed })).body).toMatchObject({
      signedIn: true,
    })
    expect((await call(peer, 'GET', '/api/users', { cookie: tossed })).status).toBe(200)
    const put = await call(peer, 'PUT', '/api/users/tossed', {
      cookie: tossed,
      csrf: true,
      body: { name: 'Tossed' },
    })
    expect(put.status).toBe(200)
    // Signing out with both ends the real session.
    expect(
      (await call(peer, 'DELETE', '/api/session', { cookie: tossed, csrf: true })).status,
    ).toBe(200)
    expect((await call(peer, 'GET', '/api/users', { cookie })).status).toBe(401)
    // The bogus one alone is no session.
    expect(
      (await call(peer, 'GET', '/api/users', { cookie: 'rostersync_session=bogus' })).status,
    ).toBe(401)
  })

  it('refuses a change made with the cookie without the CSRF header or from another origin, changing nothing', async () => {
    const peer = await server()
    await peer.users.put({ id: 'u1', name: 'Ann' })
    const cookie = await signIn(peer)
    const bare = await call(peer, 'PATCH', '/api/users/u1', { cookie, body: { name: 'Eve' } })
    expect(bare.status).toBe(403)
    expect(codeOf(bare)).toBe('CSRF_REFUSED')
    const foreign = await call(peer, 'PATCH', '/api/users/u1', {
      cookie,
      csrf: true,
      body: { name: 'Eve' },
      headers: { origin: 'http://evil.example' },
    })
    expect(codeOf(foreign)).toBe('CSRF_REFUSED')
    const crossSite = await call(peer, 'DELETE', '/api/users/u1', {
      cookie,
      csrf: true,
      headers: { 'sec-fetch-site': 'cross-site' },
    })
    expect(codeOf(crossSite)).toBe('CSRF_REFUSED')
    expect(
      (await call(peer, 'POST', '/api/session', { body: { token: peer.adminToken } })).status,
    ).toBe(403)
    expect(peer.users.get('u1')?.name).toBe('Ann')

    const ok = await call(peer, 'PATCH', '/api/users/u1', {
      cookie,
      csrf: true,
      body: { name: 'Ann Lee' },
      headers: { origin: peer.http },
    })
    expect(ok.status).toBe(200)
    expect(peer.users.get('u1')?.name).toBe('Ann Lee')
  })

  it('keeps Bearer auth as it was: no CSRF header needed, and a wrong token is refused even with a cookie', async () => {
    const peer = await server()
    const cookie = await signIn(peer)
    const bearer = { authorization: `Bearer ${peer.adminToken}` }
    expect(
      (await call(peer, 'PUT', '/api/users/u1', { body: { name: 'Ann' }, headers: bearer })).status,
    ).toBe(200)
    const wrong = await call(peer, 'GET', '/api/users', {
      cookie,
      headers: { authorization: 'Bearer wrong-token-wrong-token' },
    })
    expect(wrong.status).toBe(401)
    expect((await call(peer, 'GET', `/api/users?token=${peer.adminToken}`)).status).toBe(401)
  })

  it('ends a session after its idle time, and holds a bounded number of sessions', async () => {
    const clock = new ManualClock(Date.now())
    const peer = await server({ clock })
    const cookie = await signIn(peer)
    await clock.advance(netLimits.adminSessionIdleMsMax - 1_000)
    expect((await call(peer, 'GET', '/api/users', { cookie })).status).toBe(200)
    await clock.advance(netLimits.adminSessionIdleMsMax)
    const expired = await call(peer, 'GET', '/api/users', { cookie })
    expect(expired.status).toBe(401)
    expect((await call(peer, 'GET', '/api/session', { cookie })).body).toEqual({ signedIn: false })

    const first = await signIn(peer)
    await clock.advance(1)
    for (let i = 0; i < netLimits.adminSessionsMax; i++) await signIn(peer)
    // The least recently used session made room for the newest.
    expect((await call(peer, 'GET', '/api/users', { cookie: first })).status).toBe(401)
  })

  it("does not count the page's own requests as use: an unattended page signs out after its idle time, however busy the site", async () => {
    const clock = new ManualClock(Date.now())
    const peer = await server({ clock })
    const cookie = await signIn(peer)
    const background = { 'x-rostersync-background': '1' }
    // Live reloads and session checks every 20 minutes, as a busy site makes them.
    await clock.advance(netLimits.adminSessionIdleMsMax - 10 * 60_000)
    expect((await call(peer, 'GET', '/api/users', { cookie, headers: background })).status).toBe(
      200,
    )
    expect(
      (await call(peer, 'GET', '/api/session', { cookie, headers: background })).body,
    ).toMatchObject({ signedIn: true })
    await clock.advance(10 * 60_000)
    expect((await call(peer, 'GET', '/api/users', { cookie, headers: background })).status).toBe(
      401,
    )
    // The administrator's own request does count.
    const used = await signIn(peer)
    await clock.advance(netLimits.adminSessionIdleMsMax - 1_000)
    expect((await call(peer, 'GET', '/api/users', { cookie: used })).status).toBe(200)
    await clock.advance(netLimits.adminSessionIdleMsMax - 1_000)
    expect((await call(peer, 'GET', '/api/users', { cookie: used })).status).toBe(200)
  })
})

describe('approving a device with the key fingerprint shown', () => {
  it('is refused 412 PRECONDITION_FAILED when the key is another, and approves with the right one', async () => {
    const peer = await createServer({ store: memoryStore(), approveDevices: true })
    closers.push(() => peer.close())
    const device = await createDevice({
      id: 'T-1',
      store: memoryStore(),
      server: peer.url,
      siteKey: peer.siteKey ?? '',
    })
    closers.push(() => device.close())
    await eventually(() =>
      expect(peer.devices.list().find((d) => d.id === 'T-1')?.keyFingerprint).toBe(
        device.keyFingerprint,
      ),
    )
    const approve = (fingerprint: string): Promise<Answer> =>
      call(peer, 'POST', '/api/devices/T-1/approve', {
        headers: {
          authorization: `Bearer ${peer.adminToken}`,
          'x-rostersync-key-fingerprint': fingerprint,
        },
      })
    // An unknown device is 404 PEER_UNKNOWN, fingerprint or not (a probe: 412).
    const unknown = await call(peer, 'POST', '/api/devices/nobody/approve', {
      headers: {
        authorization: `Bearer ${peer.adminToken}`,
        'x-rostersync-key-fingerprint': device.keyFingerprint,
      },
    })
    expect([unknown.status, codeOf(unknown)]).toEqual([404, 'PEER_UNKNOWN'])
    const other = await approve('SHA256:' + 'A'.repeat(43))
    expect(other.status).toBe(412)
    expect(codeOf(other)).toBe('PRECONDITION_FAILED')
    expect(peer.devices.list().find((d) => d.id === 'T-1')?.state).toBe('pending')
    // Reset since it was shown, no key bound yet: refused too (a review).
    await device.close()
    await peer.devices.resetKey('T-1')
    expect((await approve(device.keyFingerprint)).status).toBe(412)
    const back = await createDevice({
      id: 'T-1',
      store: memoryStore(),
      server: peer.url,
      siteKey: peer.siteKey ?? '',
    })
    closers.push(() => back.close())
    await eventually(() =>
      expect(peer.devices.list().find((d) => d.id === 'T-1')?.keyFingerprint).toBe(
        back.keyFingerprint,
      ),
    )
    expect((await approve(back.keyFingerprint)).status).toBe(200)
    await eventually(() =>
      expect(peer.devices.list().find((d) => d.id === 'T-1')?.state).not.toBe('pending'),
    )
  })
})

describe('wrong admin tokens', () => {
  it(`from one address, past ${netLimits.adminTokenGuessesPerMinuteMax} a minute: 429 RATE_LIMITED before any token is compared, until the minute is out; another address is not slowed`, async () => {
    const clock = new ManualClock(Date.now())
    const peer = await server({ clock })
    const signInWith = (token: string): Promise<Answer> =>
      call(peer, 'POST', '/api/session', { csrf: true, body: { token } })
    const bearer = (token: string): Promise<Answer> =>
      call(peer, 'GET', '/api/users', { headers: { authorization: `Bearer ${token}` } })
    for (let i = 0; i < netLimits.adminTokenGuessesPerMinuteMax; i++) {
      const wrong = await (i % 2 === 0 ? signInWith : bearer)(`guess-${i}-guess-${i}-guess`)
      expect(wrong.status).toBe(401)
    }
    // Past it: refused whatever the token, the right one too (else a guess
    // would still tell right from wrong).
    for (const answer of [await signInWith(peer.adminToken), await bearer(peer.adminToken)]) {
      expect(answer.status).toBe(429)
      expect(codeOf(answer)).toBe('RATE_LIMITED')
      expect(messageOf(answer)).toMatch(/try again in \d+ s/)
    }
    // Another address (127.0.0.2) signs in meanwhile.
    const other = await new Promise<number>((resolve, reject) => {
      const url = new URL('/api/users', peer.http)
      const req = request(
        {
          host: url.hostname,
          port: url.port,
          path: url.pathname,
          localAddress: '127.0.0.2',
          headers: { authorization: `Bearer ${peer.adminToken}` },
        },
        (res) => {
          res.resume()
          resolve(res.statusCode ?? 0)
        },
      )
      req.on('error', reject)
      req.end()
    })
    expect(other).toBe(200)
    // The minute out: the right token works again.
    await clock.advance(60_000)
    expect((await bearer(peer.adminToken)).status).toBe(200)
    expect((await signInWith(peer.adminToken)).status).toBe(200)
  })
})

describe('bytes that are not UTF-8', () => {
  it('are refused in a body and in a query, and change nothing (a probe: they became U+FFFD)', async () => {
    const peer = await server()
    await peer.users.put({ id: 'u1', name: 'Ann' })
    const auth = { authorization: `Bearer ${peer.adminToken}`, 'content-type': 'application/json' }
    // "José" in Latin-1, and a lone continuation byte.
    for (const body of [
      Buffer.from('{"name":"Jos\xe9"}', 'latin1'),
      Buffer.from([0x7b, 0x22, 0x6e, 0x22, 0x3a, 0x22, 0x80, 0x22, 0x7d]),
    ]) {
      const res = await fetch(`${peer.http}/api/users/u1`, { method: 'PATCH', headers: auth, body })
      expect(res.status).toBe(400)
      expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(/UTF-8/)
    }
    expect(peer.users.get('u1')?.name).toBe('Ann')
    const res = await fetch(`${peer.http}/api/users?q=%FF`, { headers: auth })
    expect(res.status).toBe(400)
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('MALFORMED_REQUEST')
    // UTF-8 itself is fine, in both; and a `%` that encodes nothing is itself.
    for (const q of ['Jos%C3%A9', '100%', 'a%2', '%zz', 'a+b', '%2B', ''])
      expect((await fetch(`${peer.http}/api/users?q=${q}`, { headers: auth })).status, q).toBe(200)
    expect(
      (
        await fetch(`${peer.http}/api/users/u1`, {
          method: 'PATCH',
          headers: auth,
          body: '{"name":"José"}',
        })
      ).status,
    ).toBe(200)
    expect(peer.users.get('u1')?.name).toBe('José')
  })
})

describe('GET /api/users search', () => {
  async function roster(peer: ServerPeer, n: number): Promise<void> {
    await Promise.all(
      Array.from({ length: n }, (_, i) =>
        peer.users.put({
          id: `u${String(i).padStart(4, '0')}`,
          name: `Person ${i}`,
          email: `p${i}@example.com`,
          status: i % 3 === 0 ? 'disabled' : 'active',
          groups: [`g${i % 7}`],
          cards: [{ type: 'csn', value: `CARD${i}X` }],
        }),
      ),
    )
  }

  /** Every page of a query, following `next`. */
  async function walk(peer: ServerPeer, cookie: string, params: string): Promise<string[]> {
    const ids: string[] = []
    let next: string | null = null
    for (let pages = 0; pages < 100; pages++) {
      const after = next === null ? '' : `&after=${encodeURIComponent(next)}`
      const page = await call(peer, 'GET', `/api/users?${params}${after}`, { cookie })
      expect(page.status).toBe(200)
      ids.push(...(page.body.users as Array<{ id: string }>).map((u) => u.id))
      next = page.body.next as string | null
      if (next === null) return ids
    }
    throw new Error('too many pages')
  }

  it('filters by text (id, name, email, group, card), status and group, in pages', async () => {
    const peer = await server()
    await roster(peer, 300)
    const cookie = await signIn(peer)
    const all = peer.users.list()
    const expectIds = (keep: (u: (typeof all)[number]) => boolean) =>
      all.filter(keep).map((u) => u.id)

    expect(await walk(peer, cookie, 'limit=7&status=disabled')).toEqual(
      expectIds((u) => u.status === 'disabled'),
    )
    expect(await walk(peer, cookie, 'limit=10&group=g3&status=active')).toEqual(
      expectIds((u) => u.status === 'active' && (u.groups as string[]).includes('g3')),
    )
    expect(await walk(peer, cookie, 'limit=5&q=PERSON%2012')).toEqual(
      expectIds((u) => (u.name as string).toLowerCase().includes('person 12')),
    )
    expect(await walk(peer, cookie, 'q=card250x')).toEqual(['u0250'])
    expect(await walk(peer, cookie, 'q=p17%40example')).toEqual(['u0017'])
    expect(await walk(peer, cookie, 'q=u029')).toHaveLength(10)
    const counted = await call(peer, 'GET', '/api/users?q=person%201&limit=3&total=1', { cookie })
    expect(counted.body.total).toBe(
      expectIds((u) => (u.name as string).includes('Person 1')).length,
    )
    expect(counted.body.users).toHaveLength(3)
    // Without filters the paging contract is unchanged.
    expect(await walk(peer, cookie, 'limit=1000')).toEqual(all.map((u) => u.id))
  })

  it('follows edits, new users and deletes', async () => {
    const peer = await server()
    await roster(peer, 50)
    const cookie = await signIn(peer)
    expect(await walk(peer, cookie, 'q=zed')).toEqual([])
    await peer.users.patch('u0004', { name: 'Zed Zulu' })
    await peer.users.put({ id: 'zz', name: 'Zed Two' })
    expect(await walk(peer, cookie, 'q=zed')).toEqual(['u0004', 'zz'])
    await peer.users.delete('u0004')
    expect(await walk(peer, cookie, 'q=zed')).toEqual(['zz'])
    await peer.setFieldPolicies({ name: 'device-specific' })
    expect(await walk(peer, cookie, 'q=zed')).toEqual([])
  })

  it('refuses bad parameters with INVALID_OPTIONS naming the parameter', async () => {
    const peer = await server()
    const cookie = await signIn(peer)
    for (const [params, name] of [
      ['limit=0', 'limit'],
      ['limit=abc', 'limit'],
      // Number() would read these as 16 and 1000 (HTTP probe).
      ['limit=0x10', 'limit'],
      ['limit=1e3', 'limit'],
      ['status=gone', 'status'],
      [`q=${'x'.repeat(netLimits.userSearchCharsMax + 1)}`, 'q'],
      ['total=yes', 'total'],
    ] as const) {
      const res = await call(peer, 'GET', `/api/users?${params}`, { cookie })
      expect(res.status).toBe(400)
      expect(codeOf(res)).toBe('INVALID_OPTIONS')
      expect(messageOf(res)).toContain(name)
    }
  })
})

describe('GET /api/users?all=1: the whole roster only when asked, and bounded', () => {
  it('sends every match in one response, refuses past netLimits.usersAllMax, names bad parameters', async () => {
    const peer = await server()
    const max = netLimits.usersAllMax
    for (let start = 0; start < max; start += 2_000)
      await Promise.all(
        Array.from({ length: 2_000 }, (_, j) =>
          peer.users.put({
            id: `u${String(start + j).padStart(5, '0')}`,
            name: `Person ${start + j}`,
            status: (start + j) % 2 === 0 ? 'active' : 'disabled',
          }),
        ),
      )
    const cookie = await signIn(peer)
    // Without the parameter: one page, however large the roster.
    const paged = await call(peer, 'GET', '/api/users', { cookie })
    expect(paged.body.users).toHaveLength(netLimits.usersPerPageDefault)
    // With it: every user, in one response.
    const all = await call(peer, 'GET', '/api/users?all=1', { cookie })
    expect(all.status).toBe(200)
    expect(all.body).toMatchObject({ next: null, total: max })
    expect((all.body.users as Array<{ id: string }>).map((u) => u.id)).toEqual(
      peer.users.list().map((u) => u.id),
    )
    // With filters: every match.
    const active = await call(peer, 'GET', '/api/users?all=1&status=active', { cookie })
    expect(active.body.total).toBe(max / 2)
    // One more user: past the limit, a typed refusal (narrowing still works).
    await peer.users.put({ id: 'zz', name: 'One too many', status: 'active' })
    const refused = await call(peer, 'GET', '/api/users?all=1', { cookie })
    expect(refused.status).toBe(400)
    expect(codeOf(refused)).toBe('TOO_MANY_USERS')
    expect(messageOf(refused)).toContain(String(max))
    expect((await call(peer, 'GET', '/api/users?all=1&q=too%20many', { cookie })).body.total).toBe(
      1,
    )
    for (const [params, name] of [
      ['all=yes', 'all'],
      ['all=1&limit=10', 'limit'],
      ['all=1&after=u00001', 'after'],
      ['limt=10', 'limt'],
      ['limit=5&limit=500', 'limit'],
      [`after=${'x'.repeat(5_000)}`, 'after'],
    ] as const) {
      const res = await call(peer, 'GET', `/api/users?${params}`, { cookie })
      expect(res.status, params.slice(0, 20)).toBe(400)
      expect(codeOf(res)).toBe('INVALID_OPTIONS')
      expect(messageOf(res)).toContain(name)
    }
  }, 60_000)

  it('names the parameter in every error of GET /api/events and GET /api/devices', async () => {
    const peer = await server()
    const cookie = await signIn(peer)
    for (const [path, name] of [
      ['/api/events?type=bogus', 'type'],
      ['/api/events?since=abc', 'since'],
      ['/api/events?until=abc', 'until'],
      // Number() would read these as 0 and 16.
      ['/api/events?until=', 'until'],
      ['/api/events?since=%20', 'since'],
      ['/api/events?since=0x10', 'since'],
      ['/api/events?limit=0', 'limit'],
      ['/api/events?limit=-3', 'limit'],
      ['/api/events?limit=0x10', 'limit'],
      ['/api/events?limit=1e3', 'limit'],
      ['/api/events?beforeSeq=1.5', 'beforeSeq'],
      ['/api/events?usr=u1', 'usr'],
      // Read as its first value, a repeated filter would narrow silently.
      ['/api/events?user=u1&user=u2', 'user'],
      ['/api/events?type=sync-failed&type=bogus', 'type'],
      ['/api/devices?name=lobby', 'name'],
      ['/api/devices?nameContains=a&nameContains=b', 'nameContains'],
      [`/api/devices?nameContains=${'x'.repeat(5_000)}`, 'nameContains'],
    ] as const) {
      const res = await call(peer, 'GET', path, { cookie })
      expect(res.status, path.slice(0, 40)).toBe(400)
      expect(codeOf(res)).toBe('INVALID_OPTIONS')
      expect(messageOf(res)).toContain(name)
    }
    expect((await call(peer, 'GET', '/api/events?limit=5', { cookie })).status).toBe(200)
  })

  it('refuses any parameter of /api/session, and a token in the URL with why (operator probe)', async () => {
    const peer = await server()
    const cookie = await signIn(peer)
    for (const [method, path, options] of [
      ['POST', '/api/session?foo=1', { csrf: true, body: { token: peer.adminToken } }],
      ['GET', '/api/session?foo=1', { cookie }],
    ] as const) {
      const res = await call(peer, method, path, options)
      expect([res.status, codeOf(res)], path).toEqual([400, 'INVALID_OPTIONS'])
      expect(messageOf(res)).toContain('foo')
    }
    const inUrl = await call(peer, 'POST', `/api/session?token=${peer.adminToken}`, {
      csrf: true,
      body: {},
    })
    expect([inUrl.status, codeOf(inUrl)]).toEqual([400, 'INVALID_OPTIONS'])
    expect(messageOf(inUrl)).toMatch(/never goes in a URL/)
    // Health ignores its query (a monitor's cache-buster).
    expect((await call(peer, 'GET', '/api/health?_=123')).status).toBe(200)
  })
})

/** A device of `peer` on an in-memory store, closed after the test. */
async function withDevice(peer: ServerPeer, id = 'D1'): Promise<DevicePeer> {
  const device = await createDevice({
    id,
    store: memoryStore(),
    server: peer.url,
    ...(peer.siteKey === undefined ? {} : { siteKey: peer.siteKey }),
  })
  closers.push(() => device.close())
  return device
}

describe('field sources and policies', () => {
  it('says which fields are the server’s and which a device filled, and when', async () => {
    const peer = await server()
    await peer.users.put({ id: 'u1', name: 'Ann', status: 'active' })
    const device = await withDevice(peer)
    await eventually(() => expect(device.users.get('u1')?.name).toBe('Ann'))
    const before = Date.now()
    await device.users.patch('u1', { email: 'ann@example.com' })
    await eventually(() => expect(peer.users.get('u1')?.email).toBe('ann@example.com'))
    const cookie = await signIn(peer)
    const res = await call(peer, 'GET', '/api/users/u1/sources', { cookie })
    expect(res.status).toBe(200)
    const fields = res.body.fields as Array<Record<string, unknown>>
    const byField = new Map(fields.map((f) => [f.field, f]))
    expect(byField.get('name')).toMatchObject({ source: 'server', origin: 'server' })
    expect(byField.get('email')).toMatchObject({
      source: 'server',
      origin: 'device',
      deviceId: 'D1',
      policy: 'shared',
    })
    expect(byField.get('email')?.at as number).toBeGreaterThanOrEqual(before - 1_000)
    const missing = await call(peer, 'GET', '/api/users/nobody/sources', { cookie })
    expect(missing.status).toBe(404)
    expect(codeOf(missing)).toBe('USER_NOT_FOUND')
  })

  it('refuses a policy change confirmed from a preview of policies that changed since (If-Match)', async () => {
    const peer = await server()
    const cookie = await signIn(peer)
    const preview = await call(
      peer,
      'GET',
      '/api/policies/preview?field=department&policy=last-writer-wins',
      { cookie },
    )
    const tag = preview.headers.get('etag')
    expect(tag).toMatch(/^"[A-Za-z0-9_-]+"$/)
    expect(preview.body.etag).toBe(tag)
    // Another administrator changes the policies meanwhile.
    const other = await call(peer, 'PUT', '/api/policies', {
      cookie,
      csrf: true,
      body: { department: 'device-specific' },
    })
    expect(other.status).toBe(200)
    const stale = await call(peer, 'PUT', '/api/policies', {
      cookie,
      csrf: true,
      body: { department: 'last-writer-wins' },
      headers: { 'if-match': tag ?? '' },
    })
    expect(stale.status).toBe(412)
    expect(codeOf(stale)).toBe('PRECONDITION_FAILED')
    expect(peer.replica.policies().get('department')?.p).toBe('device-specific')
    // The tag of the policies now is taken; and a change without If-Match is made as before.
    const now = await call(peer, 'GET', '/api/policies', { cookie })
    const fresh = await call(peer, 'PUT', '/api/policies', {
      cookie,
      csrf: true,
      body: { department: 'last-writer-wins' },
      headers: { 'if-match': now.headers.get('etag') ?? '' },
    })
    expect(fresh.status).toBe(200)
    expect(peer.replica.policies().get('department')?.p).toBe('last-writer-wins')
    expect(fresh.headers.get('etag')).not.toBe(now.headers.get('etag'))
  })

  it('shows the consequence of a policy change before it is made, and refuses a bad one', async () => {
    const peer = await server()
    await peer.users.put({ id: 'u1', name: 'Ann', email: 'a@x.org' })
    await peer.users.put({ id: 'u2', name: 'Bob' })
    // Neither shows an email the change would clear (a probe counted both).
    await peer.users.put({ id: 'u3', name: 'Cid', email: 'c@x.org' })
    await peer.users.patch('u3', { email: null })
    await peer.users.put({ id: 'u4', name: 'Dee', email: 'd@x.org' })
    await peer.users.delete('u4')
    const cookie = await signIn(peer)
    const list = await call(peer, 'GET', '/api/policies', { cookie })
    expect(list.body.fields).toContainEqual({ field: 'email', kind: 'text', policy: 'shared' })

    const preview = await call(
      peer,
      'GET',
      '/api/policies/preview?field=email&policy=device-specific',
      { cookie },
    )
    expect(preview.body).toMatchObject({
      field: 'email',
      from: 'shared',
      to: 'device-specific',
      changes: true,
      usersWithValue: 1,
      usersLosingValue: 1,
      serverValuesCleared: 1,
    })
    expect(String(preview.body.consequence)).toContain('rule 5')
    // A preview changes nothing.
    expect(peer.users.get('u1')?.email).toBe('a@x.org')

    for (const body of [{ email: 'everywhere' }, { nosuchfield: 'shared' }, ['email']]) {
      const bad = await call(peer, 'PUT', '/api/policies', { cookie, csrf: true, body })
      expect(bad.status).toBe(400)
      expect(codeOf(bad)).toBe('INVALID_OPTIONS')
    }
    const badPreview = await call(peer, 'GET', '/api/policies/preview?field=email&policy=x', {
      cookie,
    })
    expect(messageOf(badPreview)).toContain('policy')
    expect(peer.replica.policies().get('email')).toBeUndefined()

    const done = await call(peer, 'PUT', '/api/policies', {
      cookie,
      csrf: true,
      body: { email: 'device-specific' },
    })
    expect(done.body.changed).toEqual(['email'])
    expect(peer.users.get('u1')?.email).toBeUndefined()
    const same = await call(
      peer,
      'GET',
      '/api/policies/preview?field=email&policy=device-specific',
      {
        cookie,
      },
    )
    expect(same.body).toMatchObject({ changes: false, usersLosingValue: 0 })
    const back = await call(peer, 'GET', '/api/policies/preview?field=email&policy=shared', {
      cookie,
    })
    expect(back.body).toMatchObject({ from: 'device-specific', to: 'shared', changes: true })
    expect(String(back.body.consequence)).toContain("every device's own value of it is dropped")
    const lww = await call(
      peer,
      'GET',
      '/api/policies/preview?field=name&policy=last-writer-wins',
      {
        cookie,
      },
    )
    // u1, u2 and u3 (u4 is deleted).
    expect(lww.body).toMatchObject({ usersWithValue: 3, usersLosingValue: 0 })
  })
})

/** Reads server-sent events from a stream until `until` accepts the ones seen. */
async function readEvents(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  until: (messages: Array<{ event: string; data: unknown; id?: string }>) => boolean,
): Promise<Array<{ event: string; data: unknown; id?: string }>> {
  const decoder = new TextDecoder()
  const messages: Array<{ event: string; data: unknown; id?: string }> = []
  let buffer = ''
  while (!until(messages)) {
    const { value, done } = await reader.read()
    if (done) break
    buffer += decoder.decode(value, { stream: true })
    let end: number
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end)
      buffer = buffer.slice(end + 2)
      const fields = new Map<string, string>()
      for (const line of block.split('\n')) {
        const colon = line.indexOf(':')
        if (colon > 0) fields.set(line.slice(0, colon), line.slice(colon + 1).trim())
      }
      const event = fields.get('event')
      const data = fields.get('data')
      if (event !== undefined && data !== undefined) {
        const id = fields.get('id')
        messages.push({ event, data: JSON.parse(data), ...(id === undefined ? {} : { id }) })
      }
    }
  }
  return messages
}

describe('live updates (GET /api/stream)', () => {
  it('sends the devices, then each device change and new event, until the server closes', async () => {
    const peer = await server()
    const cookie = await signIn(peer)
    const res = await fetch(`${peer.http}/api/stream`, { headers: { cookie } })
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toContain('text/event-stream')
    const reader = (res.body as ReadableStream<Uint8Array>).getReader()
    const first = await readEvents(reader, (m) => m.length >= 1)
    expect(first[0]).toEqual({ event: 'devices', data: [] })

    const device = await createDevice({
      id: 'D7',
      name: 'lobby',
      store: memoryStore(),
      server: peer.url,
      ...(peer.siteKey === undefined ? {} : { siteKey: peer.siteKey }),
    })
    closers.push(() => device.close())
    await peer.users.put({ id: 'u1', name: 'Ann' })
    const seen = await readEvents(
      reader,
      (m) =>
        m.some(
          (x) =>
            x.event === 'devices' &&
            (x.data as Array<{ id: string; state: string }>).some(
              (d) => d.id === 'D7' && d.state === 'connected',
            ),
        ) &&
        m.some(
          (x) =>
            x.event === 'events' &&
            (x.data as Array<{ userId?: string }>).some((e) => e.userId === 'u1'),
        ),
    )
    const events = seen.filter((m) => m.event === 'events')
    expect(events.every((m) => m.id !== undefined)).toBe(true)
    // A streamed row is GET /api/devices's row (it replaces it whole on
    // the page): with the key's fingerprint, which Reset key needs.
    const streamed = seen
      .filter((m) => m.event === 'devices')
      .flatMap((m) => m.data as Array<{ id: string; keyFingerprint?: string }>)
      .filter((d) => d.id === 'D7')
    expect(streamed.length).toBeGreaterThan(0)
    const fingerprint = peer.devices.list().find((d) => d.id === 'D7')?.keyFingerprint
    expect(fingerprint).toMatch(/^SHA256:/)
    for (const row of streamed) expect(row.keyFingerprint).toBe(fingerprint)

    // A device forgotten: its row goes (the page kept it; an operator probe).
    const gone = await createDevice({
      id: 'D8',
      store: memoryStore(),
      server: peer.url,
      ...(peer.siteKey === undefined ? {} : { siteKey: peer.siteKey }),
    })
    await gone.sync.whenReady()
    await gone.close()
    await readEvents(reader, (m) =>
      m.some(
        (x) =>
          x.event === 'devices' && (x.data as Array<{ id: string }>).some((d) => d.id === 'D8'),
      ),
    )
    expect(await peer.devices.forget('D8')).toBe(true)
    await readEvents(reader, (m) =>
      m.some(
        (x) =>
          x.event === 'devices' &&
          (x.data as Array<{ id: string; forgotten?: boolean }>).some(
            (d) => d.id === 'D8' && d.forgotten === true,
          ),
      ),
    )

    await peer.devices.revoke('D7')
    await readEvents(reader, (m) =>
      m.some(
        (x) =>
          x.event === 'devices' &&
          (x.data as Array<{ id: string; state: string }>).some(
            (d) => d.id === 'D7' && d.state === 'revoked',
          ),
      ),
    )
    await peer.close()
    closers.length = 0
    await device.close()
    // The stream ends with the server.
    const rest = await readEvents(reader, () => false)
    expect(Array.isArray(rest)).toBe(true)
  })

  it("streams only the rows that changed (one device's sync does not resend the others)", async () => {
    const peer = await server()
    const cookie = await signIn(peer)
    const devices: DevicePeer[] = []
    for (const id of ['D1', 'D2', 'D3']) {
      const device = await withDevice(peer, id)
      await device.sync.whenReady()
      devices.push(device)
    }
    await peer.users.put({ id: 'u1', name: 'Ann' })
    for (const d of devices) await d.sync.whenIdle()
    const res = await fetch(`${peer.http}/api/stream`, { headers: { cookie } })
    const reader = (res.body as ReadableStream<Uint8Array>).getReader()
    await readEvents(reader, (m) => m.some((x) => x.event === 'devices'))
    await devices[0]?.users.patch('u1', { email: 'ann@example.com' })
    await devices[0]?.sync.whenIdle()
    const later = await readEvents(reader, (m) =>
      m.some(
        (x) =>
          x.event === 'devices' && (x.data as Array<{ id: string }>).some((d) => d.id === 'D1'),
      ),
    )
    const rows = later
      .filter((m) => m.event === 'devices')
      .flatMap((m) => (m.data as Array<{ id: string }>).map((d) => d.id))
    expect(rows).toContain('D1')
    expect(rows).not.toContain('D2')
    expect(rows).not.toContain('D3')
    await reader.cancel()
  })

  it('ends a stream opened with a session when the session ends (sign-out)', async () => {
    const peer = await server()
    const cookie = await signIn(peer)
    const res = await fetch(`${peer.http}/api/stream`, { headers: { cookie } })
    const reader = (res.body as ReadableStream<Uint8Array>).getReader()
    await readEvents(reader, (m) => m.length >= 1)
    const out = await call(peer, 'DELETE', '/api/session', { cookie, csrf: true })
    expect(out.status).toBeLessThan(300)
    await peer.users.put({ id: 'u-after', name: 'After sign-out' })
    // The stream ends (done) without carrying anything of after the sign-out.
    const after = await readEvents(reader, () => false)
    expect(JSON.stringify(after)).not.toContain('u-after')
  })

  it('needs a session or the token, and refuses streams past its limit', async () => {
    const peer = await server()
    expect((await fetch(`${peer.http}/api/stream`)).status).toBe(401)
    const cookie = await signIn(peer)
    const open: Response[] = []
    for (let i = 0; i < netLimits.adminStreamsMax; i++) {
      const res = await fetch(`${peer.http}/api/stream`, { headers: { cookie } })
      expect(res.status).toBe(200)
      open.push(res)
    }
    const refused = await fetch(`${peer.http}/api/stream`, {
      headers: { authorization: `Bearer ${peer.adminToken}` },
    })
    expect(refused.status).toBe(503)
    expect(((await refused.json()) as { error: { code: string } }).error.code).toBe(
      'TOO_MANY_STREAMS',
    )
    for (const res of open) await res.body?.cancel()
  })
})

describe('events paging', () => {
  it('walks back through the log with beforeSeq', async () => {
    const peer = await server()
    for (let i = 0; i < 25; i++) await peer.users.put({ id: `u${i}`, name: `P${i}` })
    const cookie = await signIn(peer)
    const seen: number[] = []
    let before: number | undefined
    for (let pages = 0; pages < 10; pages++) {
      const q = `/api/events?type=user-update-succeeded&limit=10${before === undefined ? '' : `&beforeSeq=${before}`}`
      const res = await fetch(`${peer.http}${q}`, { headers: { cookie } })
      const page = (await res.json()) as Array<{ seq: number; userId: string }>
      if (page.length === 0) break
      seen.unshift(...page.map((e) => e.seq))
      before = page[0]?.seq
    }
    expect(seen).toHaveLength(25)
    expect([...seen].sort((a, b) => a - b)).toEqual(seen)
  })
})

describe('the page itself', () => {
  it('serves the page and its modules with a strict CSP, from the server only', async () => {
    const peer = await server()
    const page = await fetch(`${peer.http}/`)
    expect(page.status).toBe(200)
    expect(page.headers.get('content-type')).toBe('text/html; charset=utf-8')
    const csp = page.headers.get('content-security-policy') ?? ''
    expect(csp).toContain("default-src 'none'")
    expect(csp).toMatch(/script-src 'self' 'sha256-[A-Za-z0-9+/=]+'(;|$)/)
    expect(csp).toContain("frame-ancestors 'none'")
    expect(page.headers.get('x-content-type-options')).toBe('nosniff')
    expect(page.headers.get('x-frame-options')).toBe('DENY')
    const html = await page.text()
    expect(html).toContain('<script type="importmap">')
    expect(html).not.toMatch(/https?:\/\//)
    for (const path of ['/admin/app.js', '/admin/vendor/preact.mjs', '/admin/vendor/htm.mjs']) {
      const res = await fetch(`${peer.http}${path}`)
      expect(res.status).toBe(200)
      expect(res.headers.get('content-type')).toBe('text/javascript; charset=utf-8')
      const etag = res.headers.get('etag') ?? ''
      const again = await fetch(`${peer.http}${path}`, { headers: { 'if-none-match': etag } })
      expect(again.status).toBe(304)
    }
    // The type filter's list is the log's own, served from core/events.ts.
    const types = await (await fetch(`${peer.http}/admin/event-types.js`)).text()
    expect(types).toBe(`export const EVENT_TYPES = ${JSON.stringify(EVENT_TYPES)}\n`)
    const events = await (await fetch(`${peer.http}/admin/events.js`)).text()
    expect(events).toContain("from './event-types.js'")
    const css = await fetch(`${peer.http}/admin/style.css`)
    expect(css.headers.get('content-type')).toBe('text/css; charset=utf-8')
    const missing = await fetch(`${peer.http}/admin/nope.js`)
    expect(missing.status).toBe(404)
    expect(((await missing.json()) as { error: { code: string } }).error.code).toBe('NOT_FOUND')
    expect((await fetch(`${peer.http}/`, { method: 'POST' })).status).toBe(405)
  })
})

describe('admin page: host names (DNS rebinding)', () => {
  /** A request with the Host header `host` (fetch keeps its own). */
  const withHost = (
    peer: ServerPeer,
    method: string,
    path: string,
    host: string,
    headers: Record<string, string> = {},
    body?: string,
  ): Promise<{ status: number; code?: string; message?: string }> =>
    new Promise((resolve, reject) => {
      const url = new URL(peer.http)
      const req = request(
        { hostname: '127.0.0.1', port: url.port, path, method, headers: { ...headers, host } },
        (res) => {
          let text = ''
          res.setEncoding('utf8')
          res.on('data', (chunk: string) => (text += chunk))
          res.on('end', () => {
            let error: { code?: string; message?: string } | undefined
            try {
              error = (JSON.parse(text) as { error?: { code?: string; message?: string } }).error
            } catch {
              error = undefined
            }
            resolve({ status: res.statusCode ?? 0, ...error })
          })
        },
      )
      req.on('error', reject)
      req.end(body)
    })

  it('answers the page on IP addresses and localhost, and refuses a name it was not given', async () => {
    const peer = await server()
    const port = new URL(peer.http).port
    for (const host of [
      `127.0.0.1:${port}`,
      `localhost:${port}`,
      `[::1]:${port}`,
      'admin.localhost',
    ])
      expect((await withHost(peer, 'GET', '/', host)).status, host).toBe(200)
    const rebound = await withHost(peer, 'GET', '/', `evil.example:${port}`)
    expect(rebound).toMatchObject({ status: 403, code: 'CSRF_REFUSED' })
    expect(rebound.message).toMatch(/--admin-host evil\.example/)
    // The sign-in: refused before the token is looked at.
    const signIn = await withHost(
      peer,
      'POST',
      '/api/session',
      `evil.example:${port}`,
      {
        'content-type': 'application/json',
        'x-rostersync-csrf': '1',
        origin: `http://evil.example:${port}`,
      },
      JSON.stringify({ token: peer.adminToken }),
    )
    expect(signIn).toMatchObject({ status: 403, code: 'CSRF_REFUSED' })
  })

  it('refuses the session cookie and the Bearer token under another name, before any token counts', async () => {
    const peer = await server()
    const port = new URL(peer.http).port
    const cookie = await signIn(peer)
    expect(
      (await withHost(peer, 'GET', '/api/users', `127.0.0.1:${port}`, { cookie })).status,
    ).toBe(200)
    expect(
      await withHost(peer, 'GET', '/api/users', `evil.example:${port}`, { cookie }),
    ).toMatchObject({
      status: 403,
      code: 'CSRF_REFUSED',
    })
    // The live stream and HEAD too.
    for (const [method, path] of [
      ['GET', '/api/stream'],
      ['HEAD', '/'],
      ['HEAD', '/api/users'],
    ] as const)
      expect((await withHost(peer, method, path, `evil.example:${port}`, { cookie })).status).toBe(
        403,
      )
    const bearer = { authorization: `Bearer ${peer.adminToken}` }
    expect(await withHost(peer, 'GET', '/api/users', `evil.example:${port}`, bearer)).toMatchObject(
      {
        status: 403,
        code: 'CSRF_REFUSED',
      },
    )
    // A rebound page's wrong tokens (a review: 61 of them locked the
    // administrator's address out for the minute) count for nothing.
    const wrong = { authorization: 'Bearer not-the-token-at-all' }
    for (let i = 0; i <= netLimits.adminTokenGuessesPerMinuteMax; i++)
      expect(
        (await withHost(peer, 'GET', '/api/users', `evil.example:${port}`, wrong)).status,
      ).toBe(403)
    expect((await withHost(peer, 'GET', '/api/users', `127.0.0.1:${port}`, bearer)).status).toBe(
      200,
    )
    // Health answers on any name (a load balancer's probe).
    expect((await withHost(peer, 'GET', '/api/health', 'lb.example')).status).toBe(200)
  })

  it('answers on the names given in adminHosts, in any case', async () => {
    const peer = await createServer({ store: memoryStore(), adminHosts: ['Roster.Example'] })
    closers.push(() => peer.close())
    const port = new URL(peer.http).port
    expect((await withHost(peer, 'GET', '/', `roster.example:${port}`)).status).toBe(200)
    expect((await withHost(peer, 'GET', '/', `ROSTER.EXAMPLE.`)).status).toBe(200)
    expect((await withHost(peer, 'GET', '/', `other.example:${port}`)).status).toBe(403)
    await expect(createServer({ store: memoryStore(), adminHosts: ['a b'] })).rejects.toMatchObject(
      {
        code: 'INVALID_OPTIONS',
      },
    )
  })
})
