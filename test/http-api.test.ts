/** The server's JSON HTTP API over real HTTP on 127.0.0.1. */
import { afterEach, describe, expect, it } from 'vitest'
import { createServer, type ServerPeer } from '../server-peer/create-server.js'
import { memoryStore } from '../storage/level-store.js'

let server: ServerPeer | undefined
afterEach(async () => {
  await server?.close()
  server = undefined
})

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
  })

  it('lists devices and events', async () => {
    server = await createServer({ store: memoryStore() })
    await server.users.put({ id: 'u1', name: 'Ann' })
    expect((await call('GET', '/api/devices')).body).toEqual([])
    const events = await call('GET', '/api/events?type=user-update-succeeded&user=u1')
    expect(events.body).toHaveLength(1)
    expect((await call('GET', '/api/events?type=nonsense')).status).toBe(400)
  })
})
