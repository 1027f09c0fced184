/**
 * Rules 1 and 2 for every field of the default schema, not only the few the
 * rule tests use: a rule that holds for `name` but not for `title` (or for
 * a list, a PIN, a card, a template, a photo) fails here. Found by
 * `npm run mutants` (docs/MUTANTS.md): with rule 1 flipped for one field,
 * only the simulator's seeds failed.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { asUserId } from '../core/ids.js'
import { DEFAULT_FIELDS, type FieldValue } from '../core/schema.js'
import { createDevice, type DevicePeer } from '../peers/create-device.js'
import { link, type MemoryLink } from '../peers/memory-link.js'
import { createServer, type ServerPeer } from '../server-peer/create-server.js'
import { memoryStore } from '../storage/level-store.js'
import { ManualClock } from './helpers/manual-clock.js'

type Field = (typeof DEFAULT_FIELDS)[number]

/** Two different valid values of each default field: the server's and a device's. */
const VALUES: Record<Field, readonly [FieldValue, FieldValue]> = {
  name: ['Server Name', 'Device Name'],
  email: ['server@example.com', 'device@example.com'],
  phone: ['100', '200'],
  department: ['Server dept', 'Device dept'],
  title: ['Server title', 'Device title'],
  status: ['active', 'disabled'],
  validFrom: ['2026-01-01', '2026-02-02'],
  validUntil: ['2027-01-01', '2027-02-02'],
  groups: [['server-group'], ['device-group']],
  accessLevels: [['server-level'], ['device-level']],
  pin: ['1234', '5678'],
  cards: [[{ type: 'csn', value: 'S-1' }], [{ type: 'mobile', value: 'D-1' }]],
  fingerprints: [[new Uint8Array([1, 2])], [new Uint8Array([3, 4])]],
  faces: [[new Uint8Array([5, 6])], [new Uint8Array([7, 8])]],
  photo: [new Uint8Array([9]), new Uint8Array([10])],
}

/** An empty value of each default field where it has one (rule 2: vacant). */
const EMPTY: Partial<Record<Field, FieldValue>> = {
  name: '',
  email: '',
  phone: '',
  department: '',
  title: '',
  groups: [],
  accessLevels: [],
  cards: [],
  fingerprints: [],
  faces: [],
  photo: new Uint8Array(0),
}

const record = (side: 0 | 1, fields: readonly Field[]): Record<string, FieldValue> =>
  Object.fromEntries(fields.map((f) => [f, VALUES[f][side]]))

type Peer = ServerPeer | DevicePeer
const peers: Peer[] = []
const links: MemoryLink[] = []
afterEach(async () => {
  for (const l of links.splice(0)) l.close()
  for (const p of peers.splice(0)) await p.close()
})

/** A server and two devices on one manual clock, linked in memory. */
async function site(): Promise<{
  clock: ManualClock
  server: ServerPeer
  a: DevicePeer
  b: DevicePeer
}> {
  const clock = new ManualClock()
  const server = await createServer({ clock, store: memoryStore() })
  const a = await createDevice({ id: 'dev-a', clock, store: memoryStore() })
  const b = await createDevice({ id: 'dev-b', clock, store: memoryStore() })
  peers.push(server, a, b)
  for (const device of [a, b]) links.push(link(server.replica, device.replica))
  await settled()
  return { clock, server, a, b }
}

async function settled(): Promise<void> {
  for (let round = 0; round < 4; round++) for (const l of links) await l.settled()
}

/** The fields of the default schema that `peer` shows for u1 and that differ from `expected`'s side. */
function differing(peer: Peer, side: 0 | 1, fields: readonly Field[]): Field[] {
  const view = peer.users.get('u1') as Record<string, FieldValue> | undefined
  return fields.filter((f) => {
    // The PIN is stored hashed: each peer compares against the server's.
    if (f === 'pin') return view?.pin === undefined
    return JSON.stringify(view?.[f]) !== JSON.stringify(VALUES[f][side])
  })
}

describe('rule 1 for every field', () => {
  it('the server value wins over a later device edit of each field, on every peer', async () => {
    const { clock, server, a, b } = await site()
    await server.users.put({ id: 'u1', ...record(0, DEFAULT_FIELDS) })
    await settled()
    const pin = server.users.get('u1')?.pin
    await clock.advance(1_000)
    await a.users.patch('u1', record(1, DEFAULT_FIELDS))
    await settled()
    for (const peer of [server, a, b]) {
      expect(differing(peer, 0, DEFAULT_FIELDS)).toEqual([])
      expect(peer.users.get('u1')?.pin).toBe(pin)
    }
    const entry = server.replica.replicaOf(asUserId('u1')).server
    expect(Object.keys(entry?.f ?? {}).sort()).toEqual([...DEFAULT_FIELDS].sort())
    const overridden = a.events.query({ type: 'edit-overridden-by-server', userId: 'u1' })
    expect(overridden.flatMap((e) => e.fields ?? []).sort()).toEqual([...DEFAULT_FIELDS].sort())
  })
})

describe('rule 2 for every field', () => {
  it('a device fills each field the server left absent or empty, and the server adopts it', async () => {
    const { clock, server, a, b } = await site()
    const vacant = DEFAULT_FIELDS.filter((f) => f !== 'name')
    await server.users.put({ ...EMPTY, id: 'u1', name: 'Server Name' })
    await settled()
    await clock.advance(1_000)
    await a.users.patch('u1', record(1, vacant))
    await settled()
    for (const peer of [server, a, b]) expect(differing(peer, 1, vacant)).toEqual([])
    expect(server.users.get('u1')?.name).toBe('Server Name')
    const entry = server.replica.replicaOf(asUserId('u1')).server
    expect(Object.keys(entry?.f ?? {}).sort()).toEqual([...DEFAULT_FIELDS].sort())
    // Adopted: from now on rule 1 applies to each field.
    await clock.advance(1_000)
    await b.users.patch('u1', record(0, vacant))
    await settled()
    for (const peer of [server, a, b]) expect(differing(peer, 1, vacant)).toEqual([])
  })
})
