/** The server's JSON HTTP API over real HTTP on 127.0.0.1. */
import { afterEach, describe, expect, it } from 'vitest'
import { netLimits } from '../core/limits.js'
import { createServer, type ServerPeer } from '../server-peer/create-server.js'
import { memoryStore } from '../storage/level-store.js'
import { withLimits } from './helpers/limits.js'

let server: ServerPeer | undefined
afterEach(async () => {
  await server?.close()
  server = undefined
})

/** A request on user u1 with the admin token and `headers` (If-Match ...). */
function request(method: string, headers: Record<string, string>, body?: unknown) {
  return fetch(`${server?.http}/api/users/u1`, {
    method,
    headers: {
      authorization: `Bearer ${server?.adminToken}`,
      'content-type': 'application/json',
      ...headers,
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  })
}

async function call(method: string, path: string, body?: unknown, token = server?.adminToken) {
  const res = await fetch(`${server?.http}${path}`, {
    method,
    headers: {
      'content-type': 'application/json',
      ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  })
  return { status: res.status, body: (await res.json()) as Record<string, unknown> }
}

describe('HTTP API', () => {
  it('puts, patches, gets, lists and deletes users, with bytes as base64', async () => {
    server = await createServer({ store: memoryStore() })
    const photo = Buffer.from([1, 2, 3]).toString('base64')
    expect(
      (await call('PUT', '/api/users/u1', { name: 'Ann', photo: { base64: photo } })).status,
    ).toBe(200)
    expect(server.users.get('u1')?.photo).toEqual(new Uint8Array([1, 2, 3]))
    const patched = await call('PATCH', '/api/users/u1', { email: 'ann@example.com' })
    expect(patched.body).toEqual({
      id: 'u1',
      name: 'Ann',
      email: 'ann@example.com',
      photo: { base64: photo },
    })
    expect((await call('GET', '/api/users')).body).toEqual({ users: [patched.body], next: null })
    expect((await call('DELETE', '/api/users/u1')).status).toBe(200)
    expect((await call('GET', '/api/users/u1')).status).toBe(404)
  })

  it('refuses without the admin token, and bad records with a typed error, changing nothing', async () => {
    server = await createServer({ store: memoryStore() })
    expect((await call('GET', '/api/users', undefined, 'wrong-token-wrong-token')).status).toBe(401)
    expect((await call('GET', '/api/users', undefined, '')).body).toMatchObject({
      error: { code: 'AUTH_FAILED' },
    })
    const bad = await call('PUT', '/api/users/u1', { name: 'Ann', status: 'exploded' })
    expect(bad.status).toBe(400)
    expect(bad.body).toMatchObject({ error: { code: 'INVALID_RECORD' } })
    expect((await call('PATCH', '/api/users/nobody', { name: 'x' })).body).toMatchObject({
      error: { code: 'USER_NOT_FOUND' },
    })
    expect(server.users.list()).toEqual([])
    const res = await fetch(`${server.http}/api/users/u1`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${server.adminToken}` },
      body: '{not json',
    })
    expect(res.status).toBe(400)
  })

  it('creates only with If-None-Match: * (USER_EXISTS, 412, the user unchanged); takes the scheme in any case', async () => {
    server = await createServer({ store: memoryStore() })
    await server.users.put({ id: 'u1', name: 'Ann', email: 'ann@example.com' })
    const create = (id: string, authorization = `Bearer ${server?.adminToken}`) =>
      fetch(`${server?.http}/api/users/${id}`, {
        method: 'PUT',
        headers: { authorization, 'content-type': 'application/json', 'if-none-match': '*' },
        body: JSON.stringify({ name: 'New Person' }),
      })
    const refused = await create('u1')
    expect(refused.status).toBe(412)
    expect(await refused.json()).toMatchObject({ error: { code: 'USER_EXISTS' } })
    expect(server.users.get('u1')).toEqual({ id: 'u1', name: 'Ann', email: 'ann@example.com' })
    expect((await create('u2', `bearer ${server.adminToken}`)).status).toBe(200)
    expect(server.users.get('u2')).toEqual({ id: 'u2', name: 'New Person' })
    // Two at once for one free id (with PINs: their hashing is asynchronous):
    // one creates, the other is refused, and the user is the creator's.
    const both = await Promise.all(
      ['Ann', 'Bob'].map((name) =>
        fetch(`${server?.http}/api/users/u3`, {
          method: 'PUT',
          headers: {
            authorization: `Bearer ${server?.adminToken}`,
            'content-type': 'application/json',
            'if-none-match': '*',
          },
          body: JSON.stringify({ name, pin: '4711' }),
        }),
      ),
    )
    expect(both.map((r) => r.status).sort()).toEqual([200, 412])
    const created = both[0]?.status === 200 ? 'Ann' : 'Bob'
    expect(server.users.get('u3')?.name).toBe(created)
    // Replace only (`If-Match: *`): a user that does not exist is not
    // created (a probe: it was).
    const replace = (id: string) =>
      fetch(`${server?.http}/api/users/${id}`, {
        method: 'PUT',
        headers: {
          authorization: `Bearer ${server?.adminToken}`,
          'content-type': 'application/json',
          'if-match': '*',
        },
        body: JSON.stringify({ name: 'Replaced' }),
      })
    const absent = await replace('u9')
    expect(absent.status).toBe(412)
    expect(await absent.json()).toMatchObject({ error: { code: 'USER_NOT_FOUND' } })
    expect(server.users.get('u9')).toBeUndefined()
    expect((await replace('u1')).status).toBe(200)
    expect(server.users.get('u1')).toEqual({ id: 'u1', name: 'Replaced' })
  })

  it('reads If-None-Match on every write: * (twice or in a list of *), entity tags, or 400, never ignored', async () => {
    // A probe: a header other than exactly `*` (two `*` headers, which
    // Node joins, a list, garbage) was ignored, so a create-only PUT
    // replaced the user whole; PATCH and DELETE ignored even `*`.
    server = await createServer({ store: memoryStore() })
    const original = { id: 'u1', name: 'Ann', email: 'ann@example.com' }
    await server.users.put(original)
    const write = (method: string, ifNoneMatch: string | string[], id = 'u1') => {
      const headers = new Headers({
        authorization: `Bearer ${server?.adminToken}`,
        'content-type': 'application/json',
      })
      for (const value of [ifNoneMatch].flat()) headers.append('if-none-match', value)
      return fetch(`${server?.http}/api/users/${id}`, {
        method,
        headers,
        ...(method === 'DELETE' ? {} : { body: JSON.stringify({ name: 'Replaced' }) }),
      })
    }
    const tag = (await request('GET', {})).headers.get('etag') ?? ''
    const weak = `W/${tag}`
    for (const method of ['PUT', 'PATCH', 'DELETE']) {
      for (const header of ['*', ['*', '*'], ' * , * ']) {
        const res = await write(method, header)
        expect({ method, header, status: res.status }).toEqual({ method, header, status: 412 })
        expect(await res.json()).toMatchObject({ error: { code: 'USER_EXISTS' } })
      }
      for (const header of [tag, weak, `"other", ${tag}`]) {
        const res = await write(method, header)
        expect({ method, header, status: res.status }).toEqual({ method, header, status: 412 })
        expect(await res.json()).toMatchObject({ error: { code: 'PRECONDITION_FAILED' } })
      }
      for (const header of ['garbage', '*, "abc"', '"abc", *', 'abc', '"a"b"']) {
        const res = await write(method, header)
        expect({ method, header, status: res.status }).toEqual({ method, header, status: 400 })
        expect(await res.json()).toMatchObject({ error: { code: 'INVALID_OPTIONS' } })
      }
      expect(server.users.get('u1')).toEqual(original)
    }
    // A tag the user does not have: the write is made (an empty list member is no member).
    expect((await write('PATCH', '"other", ')).status).toBe(200)
    expect(server.users.get('u1')?.name).toBe('Replaced')
    // `*` twice on a free id creates it.
    expect((await write('PUT', ['*', '*'], 'u2')).status).toBe(200)
    expect(server.users.get('u2')).toEqual({ id: 'u2', name: 'Replaced' })
    // Both headers: If-Match is evaluated first.
    const both = await fetch(`${server.http}/api/users/u9`, {
      method: 'PUT',
      headers: {
        authorization: `Bearer ${server.adminToken}`,
        'content-type': 'application/json',
        'if-match': '*',
        'if-none-match': '*',
      },
      body: JSON.stringify({ name: 'x' }),
    })
    expect(both.status).toBe(412)
    expect(await both.json()).toMatchObject({ error: { code: 'USER_NOT_FOUND' } })
    expect(server.users.get('u9')).toBeUndefined()
  })

  it('refuses query parameters an endpoint does not take, and a preview without its field or policy (INVALID_OPTIONS)', async () => {
    // A probe: `/api/policies/preview?field=name&field=email` previewed
    // `name` alone, and every endpoint without parameters ignored them.
    server = await createServer({ store: memoryStore() })
    await server.users.put({ id: 'u1', name: 'Ann' })
    const get = async (path: string, method = 'GET') => {
      const res = await fetch(`${server?.http}${path}`, {
        method,
        headers: { authorization: `Bearer ${server?.adminToken}` },
      })
      return {
        status: res.status,
        body: (await res.json()) as { error?: { code: string; message: string } },
      }
    }
    for (const [path, method] of [
      ['/api/users/u1?bogus=1', 'GET'],
      ['/api/users/u1?x', 'DELETE'],
      ['/api/users/u1/sources?x=1', 'GET'],
      ['/api/policies?field=name', 'GET'],
      ['/api/generations?now=1', 'GET'],
      ['/api/generations?dry-run=1', 'POST'],
      ['/api/devices/D1/revoke?force=1', 'POST'],
      ['/api/policies/preview?field=name&field=email&policy=device-specific', 'GET'],
      ['/api/policies/preview?field=name&policy=shared&bogus=1', 'GET'],
      ['/api/policies/preview', 'GET'],
      ['/api/policies/preview?field=name', 'GET'],
    ] as const) {
      const res = await get(path, method)
      expect({ path, method, status: res.status, code: res.body.error?.code }).toEqual({
        path,
        method,
        status: 400,
        code: 'INVALID_OPTIONS',
      })
    }
    expect((await get('/api/policies/preview')).body.error?.message).toMatch(/needs \?field=/)
    // Nothing was deleted, compacted or revoked.
    expect(server.users.get('u1')).toEqual({ id: 'u1', name: 'Ann' })
    expect(server.generation.n).toBe(0)
    // The endpoints that take them still do.
    expect((await get('/api/policies/preview?field=name&policy=shared')).status).toBe(200)
    expect((await get('/api/users?limit=1')).status).toBe(200)
    expect((await get('/api/devices?nameContains=x')).status).toBe(200)
    expect((await get('/api/events?type=user-update-succeeded')).status).toBe(200)
    // A period that ends before it starts is a mistake to say, not "no events".
    const reversed = await get('/api/events?since=2000&until=1000')
    expect({ status: reversed.status, code: reversed.body.error?.code }).toEqual({
      status: 400,
      code: 'INVALID_OPTIONS',
    })
    expect((await get('/api/events?since=1000&until=1000')).status).toBe(200)
  })

  it('gives each user an ETag and writes on If-Match only while it still matches (PRECONDITION_FAILED, 412)', async () => {
    server = await createServer({ store: memoryStore() })
    await server.users.put({ id: 'u1', name: 'Ann', email: 'ann@example.com' })
    const got = await request('GET', {})
    const tag = got.headers.get('etag') ?? ''
    expect(tag).toMatch(/^"[A-Za-z0-9_-]{27}"$/)
    expect((await request('HEAD', {})).headers.get('etag')).toBe(tag)
    // Two admins edit from the same GET: the first wins, the second is told.
    const first = await request('PATCH', { 'if-match': tag }, { title: 'Engineer' })
    expect(first.status).toBe(200)
    const next = first.headers.get('etag') ?? ''
    expect(next).not.toBe(tag)
    const second = await request('PATCH', { 'if-match': tag }, { title: 'Manager' })
    expect(second.status).toBe(412)
    expect(await second.json()).toMatchObject({ error: { code: 'PRECONDITION_FAILED' } })
    expect(server.users.get('u1')?.title).toBe('Engineer')
    // A change made elsewhere (here: the library) moves the tag too.
    await server.users.patch('u1', { phone: '+1 555 0100' })
    expect((await request('PUT', { 'if-match': next }, { name: 'Bob' })).status).toBe(412)
    expect((await request('DELETE', { 'if-match': next })).status).toBe(412)
    expect(server.users.get('u1')?.name).toBe('Ann')
    // Any tag of a list matches; a weak one never does (a write compares strongly).
    const now = (await request('GET', {})).headers.get('etag') ?? ''
    expect((await request('PATCH', { 'if-match': `W/${now}` }, { title: 'x' })).status).toBe(412)
    expect(
      (await request('PATCH', { 'if-match': `"old", ${now}` }, { title: 'Lead' })).status,
    ).toBe(200)
    expect(server.users.get('u1')?.title).toBe('Lead')
    // Not a tag: refused, not written without the condition.
    const bad = await request('PATCH', { 'if-match': 'abc' }, { title: 'x' })
    expect(bad.status).toBe(400)
    expect(await bad.json()).toMatchObject({ error: { code: 'INVALID_OPTIONS' } })
    expect(server.users.get('u1')?.title).toBe('Lead')
    const last = (await request('GET', {})).headers.get('etag') ?? ''
    expect((await request('DELETE', { 'if-match': last })).status).toBe(200)
    expect(server.users.get('u1')).toBeUndefined()
    expect((await request('PATCH', { 'if-match': last }, { title: 'x' })).status).toBe(412)
  })

  it('checks an If-Match against a write without one still being made (a PIN being hashed)', async () => {
    server = await createServer({ store: memoryStore() })
    await server.users.put({ id: 'u1', name: 'Ann', title: 'Clerk' })
    const tag = (await request('GET', {})).headers.get('etag') ?? ''
    // A replace with a PIN takes a while (the PIN is hashed); the patch
    // from the old tag comes meanwhile.
    const replace = request('PUT', {}, { name: 'Ann', pin: '482913' })
    await new Promise((resolve) => setTimeout(resolve, 20))
    const patch = await request('PATCH', { 'if-match': tag }, { title: 'Manager' })
    expect((await replace).status).toBe(200)
    expect(patch.status).toBe(412)
    expect(server.users.get('u1')?.title).toBeUndefined()
  })

  it('lists devices and events', async () => {
    server = await createServer({ store: memoryStore() })
    await server.users.put({ id: 'u1', name: 'Ann' })
    expect((await call('GET', '/api/devices')).body).toEqual([])
    const events = await call('GET', '/api/events?type=user-update-succeeded&user=u1')
    expect(events.body).toHaveLength(1)
    expect((await call('GET', '/api/events?type=nonsense')).status).toBe(400)
    // A repeated type: events of either type, not only the first.
    await server.users.delete('u1')
    const either = await call('GET', '/api/events?type=user-deleted&type=user-update-succeeded')
    expect((either.body as unknown as { type: string }[]).map((e) => e.type).sort()).toEqual([
      'user-deleted',
      'user-update-succeeded',
    ])
    expect((await call('GET', '/api/events?type=user-deleted&user=u1&user=u2')).status).toBe(400)
  })

  it('refuses text that is not base64 for bytes, changing nothing (HTTP probe)', async () => {
    server = await createServer({ store: memoryStore() })
    await server.users.put({ id: 'u1', name: 'Ann', photo: new Uint8Array([9]) })
    // Node skips what is not base64: "!!!!" was no bytes (the photo cleared),
    // "AQ=ID@@" one byte.
    for (const text of ['!!!!', 'AQ=ID@@', 'AQ', 'AQ==\n']) {
      const res = await call('PATCH', '/api/users/u1', { photo: { base64: text } })
      expect([res.status, (res.body.error as { code?: string }).code], text).toEqual([
        400,
        'INVALID_RECORD',
      ])
    }
    expect(server.users.get('u1')?.photo).toEqual(new Uint8Array([9]))
  })

  it('ends a page of users by its bytes too, and refuses all=1 past them (HTTP probe)', async () => {
    // 800 users of 512 KiB made one 495 MiB body; 900, a string longer than
    // V8 allows, and the request was never answered.
    withLimits(netLimits, { usersPageBytesMax: 1024 * 1024 })
    server = await createServer({ store: memoryStore() })
    const photo = new Uint8Array(200 * 1024).fill(7)
    for (let i = 0; i < 12; i++) await server.users.put({ id: `u${10 + i}`, photo })
    const seen: string[] = []
    let after = ''
    for (let pages = 0; pages < 12; pages++) {
      const page = await call('GET', `/api/users?limit=100${after}`)
      expect(page.status).toBe(200)
      const users = page.body.users as Array<{ id: string }>
      // About 1 MiB: 4 users of 273 KB base64 each (the one that crosses it included).
      expect(users.length).toBeGreaterThan(0)
      expect(users.length).toBeLessThanOrEqual(4)
      seen.push(...users.map((u) => u.id))
      if (page.body.next === null) break
      after = `&after=${page.body.next as string}`
    }
    expect(seen).toEqual(Array.from({ length: 12 }, (_, i) => `u${10 + i}`))
    const all = await call('GET', '/api/users?all=1')
    expect([all.status, (all.body.error as { code?: string }).code]).toEqual([
      400,
      'TOO_MANY_USERS',
    ])
  }, 30_000)

  it('answers HEAD as GET without a body, bounds error messages, and says a wrong token was rejected (CLI/HTTP probe)', async () => {
    server = await createServer({ store: memoryStore() })
    await server.users.put({ id: 'u1', name: 'Ann' })
    const auth = { authorization: `Bearer ${server.adminToken}` }
    for (const path of ['/api/users?limit=1', '/api/users/u1', '/api/events', '/api/health']) {
      const head = await fetch(`${server.http}${path}`, { method: 'HEAD', headers: auth })
      expect(head.status, path).toBe(200)
      expect(head.headers.get('content-type'), path).toMatch(/json/)
      expect(await head.text(), path).toBe('')
    }
    // Not the event stream: it would stay open with nothing to say.
    const stream = await fetch(`${server.http}/api/stream`, { method: 'HEAD', headers: auth })
    expect(stream.status).toBe(405)
    expect(stream.headers.get('allow')).toBe('GET')
    const post = await fetch(`${server.http}/api/users`, { method: 'POST', headers: auth })
    expect(post.headers.get('allow')).toBe('GET, HEAD')
    // An unknown key of 200,000 characters: the message names it, cut.
    const bad = await call('PUT', '/api/users/zz', { name: 'x', ['k'.repeat(200_000)]: 1 })
    expect(bad.status).toBe(400)
    const message = (bad.body.error as { message: string }).message
    expect(message.length).toBeLessThan(1_200)
    expect(message).toMatch(/… \(\d+ more characters\)$/)
    expect(server.users.get('zz')).toBeUndefined()
    const wrong = await fetch(`${server.http}/api/users`, {
      headers: { authorization: 'Bearer nope' },
    })
    expect(wrong.status).toBe(401)
    expect(wrong.headers.get('www-authenticate')).toBe('Bearer')
    expect(((await wrong.json()) as { error: { message: string } }).error.message).toMatch(
      /rejected/,
    )
    const none = await fetch(`${server.http}/api/users`)
    expect(((await none.json()) as { error: { message: string } }).error.message).toMatch(
      /required/,
    )
  })
})
