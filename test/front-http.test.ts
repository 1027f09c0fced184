/**
 * The HTTP API's front door over real HTTP on 127.0.0.1 (issue 11): only
 * `Authorization: Bearer` counts, a body cannot name another record than
 * its URL, paths that do not decode or smuggle `../` or NUL are refused
 * typed, wrong methods get 405 with `Allow`, bodies are bounded, the roster
 * comes in pages, and no error echoes more than an excerpt of the request.
 */
import { request } from 'node:http'
import { afterEach, describe, expect, it } from 'vitest'
import { limits, netLimits } from '../core/limits.js'
import { createServer, type ServerPeer } from '../server-peer/create-server.js'
import { memoryStore } from '../storage/level-store.js'

let server: ServerPeer | undefined
afterEach(async () => {
  await server?.close()
  server = undefined
})

async function open(): Promise<ServerPeer> {
  server = await createServer({ store: memoryStore(), siteKey: 'http-site-key' })
  return server
}

interface Answer {
  readonly status: number
  readonly headers: Record<string, string | string[] | undefined>
  readonly body: { error?: { code: string; message: string } } & Record<string, unknown>
  readonly text: string
}

/**
 * One request written with node:http (not fetch, which would normalise the
 * path and refuse some methods), the path sent exactly as given.
 */
function call(
  method: string,
  path: string,
  options: { auth?: string | null; body?: string | Buffer } = {},
): Promise<Answer> {
  const peer = server as ServerPeer
  const url = new URL(peer.http)
  const auth = options.auth === undefined ? `Bearer ${peer.adminToken}` : options.auth
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: url.hostname,
        port: url.port,
        method,
        path,
        headers: {
          'content-type': 'application/json',
          ...(auth === null ? {} : { authorization: auth }),
        },
      },
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8')
          let body: Answer['body'] = {}
          try {
            body = JSON.parse(text) as Answer['body']
          } catch {
            // Not JSON: the test looks at the status.
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body, text })
        })
      },
    )
    req.on('error', reject)
    if (options.body !== undefined) req.write(options.body)
    req.end()
  })
}

describe('HTTP API: authorisation', () => {
  it('takes only `Authorization: Bearer <token>`: not a bare token, not a token in the query', async () => {
    const peer = await open()
    expect((await call('GET', '/api/users')).status).toBe(200)
    const bare = await call('GET', '/api/users', { auth: peer.adminToken })
    expect(bare.status).toBe(401)
    expect(bare.body.error?.code).toBe('AUTH_FAILED')
    for (const name of ['token', 'access_token', 'auth', 'bearer']) {
      const query = await call('GET', `/api/users?${name}=${peer.adminToken}`, { auth: null })
      expect(query.status, name).toBe(401)
    }
    // The scheme's name is case-insensitive (RFC 9110, 11.1): still a Bearer token.
    expect((await call('GET', '/api/users', { auth: `bearer ${peer.adminToken}` })).status).toBe(
      200,
    )
    expect((await call('GET', '/api/users', { auth: `Basic ${peer.adminToken}` })).status).toBe(401)
    expect((await call('GET', '/api/health', { auth: null })).status).toBe(200)
  })
})

describe('HTTP API: hostile requests', () => {
  it('refuses a PUT whose body names another user (400 INVALID_RECORD), changing nothing', async () => {
    const peer = await open()
    const answer = await call('PUT', '/api/users/u5', { body: '{"id":"other","name":"Eve"}' })
    expect(answer.status).toBe(400)
    expect(answer.body.error?.code).toBe('INVALID_RECORD')
    expect(peer.users.list()).toEqual([])
    // The same id in the body is fine.
    expect((await call('PUT', '/api/users/u5', { body: '{"id":"u5","name":"Eve"}' })).status).toBe(
      200,
    )
  })

  it('answers paths that do not decode, `../` and NUL in ids with 400 MALFORMED_REQUEST', async () => {
    await open()
    for (const path of [
      '/api/users/%E0%A4%A',
      '/api/users/%',
      '/api/users/..%2F..%2Fetc%2Fpasswd',
      '/api/users/a%00b',
      '/api/users/%0A',
      '/api/devices/..%2Fx/revoke',
      '//api/users',
      // The URL parser reads `\` as `/`: a dot segment in disguise.
      '/api/users/x\\..\\u1',
      '/api/users\\..\\..\\admin/app.js',
    ]) {
      const answer = await call('GET', path)
      expect(answer.status, path).toBe(400)
      expect(answer.body.error?.code, path).toBe('MALFORMED_REQUEST')
    }
  })

  it('answers malformed JSON with 400 and oversized bodies with 413, typed', async () => {
    const peer = await open()
    const bad = await call('PUT', '/api/users/u1', { body: '{not json' })
    expect(bad.status).toBe(400)
    expect(bad.body.error?.code).toBe('MALFORMED_MESSAGE')
    const big = await call('PUT', '/api/users/u1', {
      body: Buffer.alloc(netLimits.httpBodyBytesMax + 1, 0x20),
    })
    expect(big.status).toBe(413)
    expect(big.body.error?.code).toBe('MESSAGE_TOO_LARGE')
    expect(peer.users.list()).toEqual([])
  })

  it('answers a wrong method with 405 and Allow', async () => {
    await open()
    for (const [method, path, allow] of [
      // HEAD answers where GET does (RFC 9110).
      ['POST', '/api/users', 'GET, HEAD'],
      ['DELETE', '/api/users', 'GET, HEAD'],
      ['POST', '/api/users/u1', 'GET, PUT, PATCH, DELETE, HEAD'],
      ['GET', '/api/devices/d1/revoke', 'POST'],
      ['HEAD', '/api/devices/d1/revoke', 'POST'],
      ['PUT', '/api/events', 'GET, HEAD'],
    ] as const) {
      const answer = await call(method, path)
      expect(answer.status, `${method} ${path}`).toBe(405)
      expect(answer.headers.allow, `${method} ${path}`).toBe(allow)
      // (A HEAD answer has no body.)
      if (method !== 'HEAD') expect(answer.body.error?.code).toBe('METHOD_NOT_ALLOWED')
    }
    expect((await call('GET', '/api/nothing')).body.error?.code).toBe('NOT_FOUND')
  })

  it('never echoes more than an excerpt of the request', async () => {
    await open()
    const id = 'q'.repeat(5_000)
    const answers = [
      await call('GET', `/api/users/${id}`),
      await call('GET', `/api/events?type=${id}`),
      await call('GET', `/api/nothing/${id}`),
      await call('POST', `/api/devices/${id}/revoke`),
    ]
    for (const answer of answers) {
      expect(answer.status).toBeGreaterThanOrEqual(400)
      expect(answer.body.error?.message.length).toBeLessThan(limits.errorExcerptCharsMax + 100)
    }
  })

  it('says USER_NOT_FOUND in one wording, whichever way the user is missing', async () => {
    await open()
    const get = await call('GET', '/api/users/nobody')
    const del = await call('DELETE', '/api/users/nobody')
    const patch = await call('PATCH', '/api/users/nobody', { body: '{"name":"x"}' })
    expect([get.status, del.status, patch.status]).toEqual([404, 404, 404])
    expect(get.body.error).toEqual(del.body.error)
    expect(get.body.error).toEqual(patch.body.error)
  })
})

describe('HTTP API: pages and devices', () => {
  it('pages GET /api/users with limit and after; next is the cursor, null on the last page', async () => {
    const peer = await open()
    for (let i = 0; i < 250; i++)
      await peer.users.put({ id: `u${String(i).padStart(3, '0')}`, name: `User ${i}` })
    const first = await call('GET', '/api/users')
    const users = first.body.users as Array<{ id: string }>
    expect(users).toHaveLength(netLimits.usersPerPageDefault)
    expect(first.body.next).toBe(users.at(-1)?.id)
    const seen = users.map((u) => u.id)
    let next = first.body.next as string | null
    while (next !== null) {
      const page = await call('GET', `/api/users?limit=70&after=${encodeURIComponent(next)}`)
      seen.push(...(page.body.users as Array<{ id: string }>).map((u) => u.id))
      next = page.body.next as string | null
    }
    expect(seen).toEqual(peer.users.list().map((u) => u.id))
    for (const limit of ['0', '-1', 'x', String(netLimits.usersPerPageMax + 1)])
      expect((await call('GET', `/api/users?limit=${limit}`)).status, limit).toBe(400)
  })

  it('approves a pending device over the API; unknown is 404, revoked is 409', async () => {
    server = await createServer({
      store: memoryStore(),
      siteKey: 'http-site-key',
      approveDevices: true,
    })
    const { memoryPair } = await import('../transports/memory-transport.js')
    const [, theirs] = memoryPair()
    server.accept(theirs, '/roster?device=T-7&key=http-site-key')
    expect(server.devices.list()).toMatchObject([{ id: 'T-7', state: 'pending' }])
    expect((await call('POST', '/api/devices/T-7/approve')).status).toBe(200)
    expect(server.devices.list()).toMatchObject([{ id: 'T-7', pending: false }])
    expect((await call('POST', '/api/devices/nobody/approve')).body.error?.code).toBe(
      'PEER_UNKNOWN',
    )
    // A key reset puts it back to waiting for approval.
    expect((await call('POST', '/api/devices/T-7/reset-key')).status).toBe(200)
    expect(server.devices.list()).toMatchObject([{ id: 'T-7', state: 'pending' }])
    expect((await call('POST', '/api/devices/nobody/reset-key')).body.error?.code).toBe(
      'PEER_UNKNOWN',
    )
    await server.devices.revoke('T-7')
    expect((await call('POST', '/api/devices/T-7/reset-key')).body.error?.code).toBe('PEER_REVOKED')
    const revoked = await call('POST', '/api/devices/T-7/approve')
    expect(revoked.status).toBe(409)
    expect(revoked.body.error?.code).toBe('PEER_REVOKED')
  })
})
