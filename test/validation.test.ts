/**
 * Bad input gets a clear, typed error and changes nothing (SEMANTICS "Bad
 * input"): schema-invalid records and patches, bad factory options, and
 * remote updates that do not decode.
 */
import * as Y from 'yjs'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { hasCode, RostersyncError, type ErrorCode } from '../core/errors.js'
import { limits } from '../core/limits.js'
import { PIN_HASH_PATTERN } from '../core/schema.js'
import { createDevice, type DevicePeer } from '../peers/create-device.js'
import { link } from '../peers/memory-link.js'
import { verifyPin } from '../peers/pin.js'
import { createServer, type ServerPeer } from '../server-peer/create-server.js'
import { memoryStore } from '../storage/level-store.js'

/** The rejection of `promise`, or a test failure if it resolves. */
async function rejectionOf(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => expect.fail('expected a rejection'),
    (reason: unknown) => reason,
  )
}

async function expectCode(promise: Promise<unknown>, code: ErrorCode): Promise<RostersyncError> {
  const error = await rejectionOf(promise)
  expect(error).toBeInstanceOf(RostersyncError)
  expect((error as RostersyncError).code).toBe(code)
  return error as RostersyncError
}

type Peer = ServerPeer | DevicePeer

/** Everything a bad write must leave alone: views, events, replicated state, local state. */
function snapshot(peer: Peer): unknown {
  return {
    list: peer.users.list(),
    events: peer.events.query(),
    doc: Y.encodeStateAsUpdate(peer.replica.doc),
    vector: Y.encodeStateVector(peer.replica.doc),
  }
}

const bytes = (length: number, fill = 7): Uint8Array => new Uint8Array(length).fill(fill)

/** Records that fail the default schema, each with the reason. */
const invalidRecords: ReadonlyArray<readonly [string, unknown]> = [
  ['an unknown field', { id: 'u9', name: 'X', nickname: 'x' }],
  ['a number for a text field', { id: 'u9', name: 42 }],
  ['a string for a list field', { id: 'u9', groups: 'staff' }],
  ['a list of numbers for groups', { id: 'u9', groups: [1, 2] }],
  ['an empty group id', { id: 'u9', groups: [''] }],
  ['text over textCharsMax', { id: 'u9', name: 'x'.repeat(limits.textCharsMax + 1) }],
  [
    'an oversized fingerprint template',
    { id: 'u9', fingerprints: [bytes(limits.templateBytesMax + 1)] },
  ],
  ['an oversized face template', { id: 'u9', faces: [bytes(limits.templateBytesMax + 1)] }],
  [
    'too many fingerprints',
    {
      id: 'u9',
      fingerprints: Array.from({ length: limits.fingerprintsPerUserMax + 1 }, () => bytes(8)),
    },
  ],
  ['a template that is not bytes', { id: 'u9', fingerprints: ['AAAA'] }],
  ['an oversized photo', { id: 'u9', photo: bytes(limits.photoBytesMax + 1) }],
  ['a photo as a base64 string', { id: 'u9', photo: 'iVBORw0KGgo=' }],
  ['an unknown card type', { id: 'u9', cards: [{ type: 'magstripe', value: '1234' }] }],
  ['a card without a value', { id: 'u9', cards: [{ type: 'csn', value: '' }] }],
  ['a card with an extra key', { id: 'u9', cards: [{ type: 'csn', value: '1', pin: '1' }] }],
  ['a bad status', { id: 'u9', status: 'suspended' }],
  ['a status in the wrong case', { id: 'u9', status: 'Active' }],
  ['an impossible date', { id: 'u9', validFrom: '2024-13-01' }],
  ['a date in words', { id: 'u9', validUntil: 'next tuesday' }],
  ['a date as a number', { id: 'u9', validFrom: 1_700_000_000_000 }],
  ['a PIN with letters', { id: 'u9', pin: '12ab' }],
  ['a PIN too short', { id: 'u9', pin: '123' }],
  ['an empty id', { id: '', name: 'X' }],
  ['a numeric id', { id: 7, name: 'X' }],
  ['no id', { name: 'X' }],
  ['an id with a control character', { id: 'u\u00079', name: 'X' }],
  // No HTTP path reaches these (/api/users/<id>): browsers resolve dot
  // segments, and a slash splits the segment (HTTP probe).
  ['an id with a slash', { id: 'u/9', name: 'X' }],
  ['an id with a backslash', { id: 'u\\9', name: 'X' }],
  ['the id "."', { id: '.', name: 'X' }],
  ['the id ".."', { id: '..', name: 'X' }],
  // Yjs stores text as UTF-8, which turns a lone surrogate into U+FFFD: the
  // writer would show another value than every other peer (HTTP probe).
  ['an id with a lone surrogate', { id: 'u\ud8009', name: 'X' }],
  ['a name with a lone surrogate', { id: 'u9', name: 'A\ud800B' }],
  ['a group with a lone surrogate', { id: 'u9', groups: ['g\udc00'] }],
  ['a card value with a lone surrogate', { id: 'u9', cards: [{ type: 'csn', value: '\ud83d' }] }],
  ['an id over userIdCharsMax', { id: 'u'.repeat(limits.userIdCharsMax + 1) }],
  ['null', null],
  ['a string', 'u9'],
  ['an array', [{ id: 'u9' }]],
  ['a number', 42],
  [
    'a record over recordBytesMax',
    {
      id: 'u9',
      photo: bytes(limits.photoBytesMax),
      groups: Array.from({ length: limits.groupsPerUserMax }, (_, i) =>
        `${i}`.padEnd(limits.textCharsMax, 'g'),
      ),
    },
  ],
]

/** The fields of the invalid records that carry a valid id: each is an invalid patch. */
const invalidPatches = invalidRecords.flatMap(([why, record]) => {
  if (typeof record !== 'object' || record === null || Array.isArray(record)) return []
  const { id, ...fields } = record as Record<string, unknown>
  return id === 'u9' ? [[why, fields] as const] : []
})

describe.each([
  ['server', () => createServer({ store: memoryStore() })],
  ['device', () => createDevice({ id: 'dev-a', store: memoryStore() })],
] as const)('%s: invalid writes', (_kind, open) => {
  let peer: Peer

  beforeEach(async () => {
    peer = await open()
    await peer.users.put({ id: 'u1', name: 'Valid User', email: 'valid@example.com' })
  })

  afterEach(async () => {
    await peer.close()
  })

  it.each(invalidRecords)(
    'put of a record with %s rejects INVALID_RECORD',
    async (_why, record) => {
      const before = snapshot(peer)
      await expectCode(peer.users.put(record), 'INVALID_RECORD')
      expect(snapshot(peer)).toEqual(before)
    },
  )

  it.each(invalidPatches)(
    'patch with %s rejects INVALID_RECORD and leaves the user as it was',
    async (_why, fields) => {
      const before = snapshot(peer)
      await expectCode(peer.users.patch('u1', fields), 'INVALID_RECORD')
      expect(snapshot(peer)).toEqual(before)
      expect(peer.users.get('u1')).toEqual({
        id: 'u1',
        name: 'Valid User',
        email: 'valid@example.com',
      })
    },
  )

  it("says what is wrong in plain words, naming the field (not zod's layout)", async () => {
    // A probe of the admin page: "✖ Invalid input → at validFrom".
    const said = async (write: Promise<unknown>): Promise<string> =>
      write.then(
        () => 'taken',
        (error: unknown) => (error as Error).message,
      )
    expect(await said(peer.users.patch('u1', { validFrom: 'tomorrow' }))).toBe(
      'invalid record: validFrom: expected a date (YYYY-MM-DD) or a date and time with its offset (RFC 3339)',
    )
    expect(await said(peer.users.patch('u1', { cards: [{ type: 'zz', value: '1' }] }))).toMatch(
      /^invalid record: cards\[0\]\.type: .*"csn"/,
    )
    expect(await said(peer.users.put({ id: '..', name: 'x' }))).toMatch(
      /^invalid user id: not "\." or "\.\."/,
    )
  })

  it('text outside the BMP (a surrogate pair) is valid, in ids and fields', async () => {
    await peer.users.put({ id: 'u-😀', name: 'Ann 😀', groups: ['𝔤'] })
    expect(peer.users.get('u-😀')).toMatchObject({ name: 'Ann 😀', groups: ['𝔤'] })
  })

  it('a patch that tries to change the id, or is not an object, rejects INVALID_RECORD', async () => {
    const before = snapshot(peer)
    await expectCode(peer.users.patch('u1', { id: 'u2' }), 'INVALID_RECORD')
    await expectCode(peer.users.patch('u1', null), 'INVALID_RECORD')
    await expectCode(peer.users.patch('u1', ['name']), 'INVALID_RECORD')
    await expectCode(peer.users.patch('', { name: 'X' }), 'INVALID_RECORD')
    await expectCode(peer.users.delete(''), 'INVALID_RECORD')
    expect(snapshot(peer)).toEqual(before)
  })

  it('a patch holding the id of the user it patches (a view spread into it) is taken', async () => {
    const view = peer.users.get('u1')
    expect(view).toBeDefined()
    await peer.users.patch('u1', { ...view, email: 'same-id@example.com' })
    expect(peer.users.get('u1')).toEqual({ ...view, email: 'same-id@example.com' })
    // Another id is still a change of it.
    await expectCode(peer.users.patch('u1', { ...view, id: 'U1' }), 'INVALID_RECORD')
  })

  it('a patch of an absent user rejects USER_NOT_FOUND and creates nothing', async () => {
    const before = snapshot(peer)
    const error = await expectCode(peer.users.patch('nobody', { name: 'Ghost' }), 'USER_NOT_FOUND')
    expect(error.message).toContain('nobody')
    expect(peer.users.get('nobody')).toBeUndefined()
    expect(snapshot(peer)).toEqual(before)
  })

  it('one bad write in a batch fails alone; the others in the same tick succeed', async () => {
    const results = await Promise.allSettled([
      peer.users.put({ id: 'u2', name: 'Two' }),
      peer.users.patch('nobody', { name: 'Ghost' }),
      peer.users.put({ id: 'u3', name: 'Three' }),
    ])
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled'])
    const reason: unknown = results[1]?.status === 'rejected' ? results[1].reason : undefined
    expect(hasCode(reason, 'USER_NOT_FOUND')).toBe(true)
    expect(peer.users.list().map((u) => u.id)).toEqual(['u1', 'u2', 'u3'])
  })

  it('stores a PIN hashed, never as typed', async () => {
    await peer.users.put({ id: 'u2', name: 'Pin Holder', pin: '482913' })
    const stored = peer.users.get('u2')?.pin
    expect(typeof stored).toBe('string')
    expect(stored).toMatch(PIN_HASH_PATTERN)
    // A server without a site key given generates one and peppers with it.
    const key = 'siteKey' in peer ? peer.siteKey : undefined
    expect(verifyPin('482913', stored as string, key)).toBe(true)
    expect(verifyPin('482914', stored as string, key)).toBe(false)
    expect(verifyPin('482913', '482913', key)).toBe(false)
    expect(Buffer.from(Y.encodeStateAsUpdate(peer.replica.doc)).includes('482913')).toBe(false)
    // The same PIN twice hashes differently (salted).
    await peer.users.patch('u2', { pin: '482913' })
    const again = peer.users.get('u2')?.pin as string
    expect(again).not.toBe(stored)
    expect(verifyPin('482913', again, key)).toBe(true)
    // An already hashed PIN is kept as it is (import, replication).
    await peer.users.put({ id: 'u3', name: 'Imported', pin: again })
    expect(peer.users.get('u3')?.pin).toBe(again)
  })
})

describe('a PIN set on a device', () => {
  it('reaches the server hashed and still verifies there', async () => {
    const server = await createServer({ store: memoryStore() })
    const device = await createDevice({ id: 'dev-a', store: memoryStore() })
    const l = link(server.replica, device.replica)
    await device.users.put({ id: 'u1', name: 'Door User', pin: '2580' })
    await l.settled()
    const stored = server.users.get('u1')?.pin
    expect(stored).toMatch(PIN_HASH_PATTERN)
    expect(verifyPin('2580', stored as string)).toBe(true)
    l.close()
    await device.close()
    await server.close()
  })
})

describe('custom fields', () => {
  it('are validated by their declared kind', async () => {
    const server = await createServer({
      store: memoryStore(),
      customFields: { badge: 'number', contractor: 'boolean', zones: 'string[]', sig: 'bytes' },
    })
    const ok = { id: 'u1', name: 'C', badge: 1201, contractor: true, zones: ['z1'], sig: bytes(4) }
    await server.users.put(ok)
    expect(server.users.get('u1')).toEqual(ok)
    const before = snapshot(server)
    for (const bad of [
      { id: 'u2', badge: '1201' },
      { id: 'u2', badge: Number.POSITIVE_INFINITY },
      { id: 'u2', contractor: 'yes' },
      { id: 'u2', zones: 'z1' },
      { id: 'u2', sig: 'AAAA' },
      { id: 'u2', sig: bytes(limits.photoBytesMax + 1) },
      { id: 'u2', undeclared: 1 },
    ]) {
      await expectCode(server.users.put(bad), 'INVALID_RECORD')
    }
    await expectCode(server.users.patch('u1', { badge: 'x' }), 'INVALID_RECORD')
    expect(snapshot(server)).toEqual(before)
    await server.close()
  })

  it('a peer without the declaration refuses them', async () => {
    const device = await createDevice({ id: 'dev-a', store: memoryStore() })
    await expectCode(device.users.put({ id: 'u1', badge: 1 }), 'INVALID_RECORD')
    await device.close()
  })
})

describe('factory options', () => {
  const badServerOptions: ReadonlyArray<readonly [string, unknown]> = [
    ['neither dataDir nor store', {}],
    ['an unknown option', { store: memoryStore(), colour: 'blue' }],
    ['an empty dataDir', { dataDir: '' }],
    ['a negative port', { store: memoryStore(), port: -1 }],
    ['a port above 65535', { store: memoryStore(), port: 70_000 }],
    ['an unknown field policy', { store: memoryStore(), fieldPolicies: { name: 'server-only' } }],
    [
      'a policy for an unknown field',
      { store: memoryStore(), fieldPolicies: { shoeSize: 'shared' } },
    ],
    ['a clock without timers', { store: memoryStore(), clock: { now: () => 0 } }],
    ['an unknown custom field kind', { store: memoryStore(), customFields: { badge: 'date' } }],
    [
      'a custom field named like a default one',
      { store: memoryStore(), customFields: { name: 'string' } },
    ],
    ['a custom field called id', { store: memoryStore(), customFields: { id: 'string' } }],
    // Read off an entry without it, a plain object's own name is a value.
    [
      'a custom field called constructor',
      { store: memoryStore(), customFields: { constructor: 'string' } },
    ],
    [
      'a custom field called toString',
      { store: memoryStore(), customFields: { toString: 'string' } },
    ],
    ['a zero eventsMax', { store: memoryStore(), eventsMax: 0 }],
    ['options that are not an object', 'data'],
  ]

  it.each(badServerOptions)(
    'createServer with %s rejects INVALID_OPTIONS',
    async (_why, options) => {
      await expectCode(
        createServer(options as Parameters<typeof createServer>[0]),
        'INVALID_OPTIONS',
      )
    },
  )

  const badDeviceOptions: ReadonlyArray<readonly [string, unknown]> = [
    ['no id', { store: memoryStore() }],
    ['an empty id', { id: '', store: memoryStore() }],
    ['the id "server"', { id: 'server', store: memoryStore() }],
    ['an id with a space', { id: 'dev a', store: memoryStore() }],
    [
      'an id over writerIdCharsMax',
      { id: 'd'.repeat(limits.writerIdCharsMax + 1), store: memoryStore() },
    ],
    ['no dataDir or store', { id: 'dev-a' }],
    ['a server that is not a URL', { id: 'dev-a', store: memoryStore(), server: 'not a url' }],
    ['an unknown mode', { id: 'dev-a', store: memoryStore(), mode: 'turbo' }],
    ['a zero delta interval', { id: 'dev-a', store: memoryStore(), deltaIntervalMs: 0 }],
    ['a lan without enabled', { id: 'dev-a', store: memoryStore(), lan: { port: 1 } }],
    ['an unknown option', { id: 'dev-a', store: memoryStore(), fieldPolicies: {} }],
  ]

  it.each(badDeviceOptions)(
    'createDevice with %s rejects INVALID_OPTIONS',
    async (_why, options) => {
      await expectCode(
        createDevice(options as Parameters<typeof createDevice>[0]),
        'INVALID_OPTIONS',
      )
    },
  )
})

describe('malformed remote updates', () => {
  /** A deterministic byte source (xorshift32), so a failing case replays. */
  function pseudoRandomBytes(seed: number, length: number): Uint8Array {
    let x = seed >>> 0 || 1
    return Uint8Array.from({ length }, () => {
      x ^= x << 13
      x ^= x >>> 17
      x ^= x << 5
      return x & 0xff
    })
  }

  /** A real update from another device that wrote two users. */
  async function realUpdate(): Promise<Uint8Array> {
    const other = await createDevice({ id: 'dev-b', store: memoryStore() })
    await other.users.put({ id: 'u7', name: 'Seven', email: 'seven@example.com' })
    await other.users.put({ id: 'u8', name: 'Eight', photo: bytes(64) })
    const update = Y.encodeStateAsUpdate(other.replica.doc)
    await other.close()
    return update
  }

  let server: ServerPeer
  beforeEach(async () => {
    server = await createServer({ store: memoryStore() })
    await server.users.put({ id: 'u1', name: 'Valid User' })
  })
  afterEach(async () => {
    await server.close()
  })

  it.each([1, 2, 3, 42, 1234, 99_999])(
    'random bytes (seed %i) reject MALFORMED_MESSAGE and leave the roster unchanged',
    async (seed) => {
      const before = snapshot(server)
      await expectCode(server.replica.applyRemote(pseudoRandomBytes(seed, 64)), 'MALFORMED_MESSAGE')
      expect(snapshot(server)).toEqual(before)
    },
  )

  it('a truncated real update rejects MALFORMED_MESSAGE at every cut, and changes nothing', async () => {
    const update = await realUpdate()
    const before = snapshot(server)
    for (const cut of [
      1,
      3,
      Math.floor(update.length / 3),
      Math.floor(update.length / 2),
      update.length - 1,
    ]) {
      const error = await rejectionOf(server.replica.applyRemote(update.slice(0, cut)))
      expect(hasCode(error, 'MALFORMED_MESSAGE'), `cut at ${cut} of ${update.length}`).toBe(true)
    }
    expect(snapshot(server)).toEqual(before)
    // The whole update still applies afterwards: nothing was half-applied.
    await server.replica.applyRemote(update)
    expect(server.users.list().map((u) => u.id)).toEqual(['u1', 'u7', 'u8'])
  })

  it('an empty byte array rejects MALFORMED_MESSAGE', async () => {
    const before = snapshot(server)
    await expectCode(server.replica.applyRemote(new Uint8Array(0)), 'MALFORMED_MESSAGE')
    expect(snapshot(server)).toEqual(before)
  })
})
