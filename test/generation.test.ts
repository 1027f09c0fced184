/**
 * A generation's base (core/generation.ts): the live state of a document
 * with its history gone. Random histories (overwrites under many clientIDs,
 * server deletes, void device entries, policies, revocations) are replayed
 * into a Yjs document and, independently, into a plain model of "the last
 * value written per root and key" (what a Yjs map shows when one document
 * applies writes in order); the base must hold exactly the model's entries
 * a view can read (rule 4 drops a device entry older than the server's
 * epoch), and nothing else: one clientID per root, no deletes.
 */
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import {
  asDeviceEntry,
  asServerEntry,
  type DeviceEntry,
  type PolicyEntry,
  type ServerEntry,
} from '../core/entries.js'
import { generationBase } from '../core/generation.js'
import { asUserId, asWriterId, SERVER_ID, type WriterId } from '../core/ids.js'
import { resolveUser, type PolicyTable, type UserReplica } from '../core/resolve.js'

const SEED = Number(process.env.GENERATION_SEED ?? Date.now() % 1_000_000)
const DEVICES = ['d1', 'd2', 'd3'].map(asWriterId)
const USERS = ['u1', 'u2', 'u3', 'u4', 'u5']

type Op =
  | { kind: 'server-put'; user: string; name: string }
  | { kind: 'server-delete'; user: string }
  | { kind: 'device-put'; device: number; user: string; name: string; epochLag: number }
  | { kind: 'policy'; field: string }
  | { kind: 'revoke'; device: number }
  | { kind: 'restart'; device: number }

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    kind: fc.constant('server-put' as const),
    user: fc.constantFrom(...USERS),
    name: fc.string({ maxLength: 4 }),
  }),
  fc.record({ kind: fc.constant('server-delete' as const), user: fc.constantFrom(...USERS) }),
  fc.record({
    kind: fc.constant('device-put' as const),
    device: fc.nat({ max: DEVICES.length - 1 }),
    user: fc.constantFrom(...USERS),
    name: fc.string({ maxLength: 4 }),
    epochLag: fc.nat({ max: 1 }),
  }),
  fc.record({ kind: fc.constant('policy' as const), field: fc.constantFrom('name', 'title') }),
  fc.record({ kind: fc.constant('revoke' as const), device: fc.nat({ max: DEVICES.length - 1 }) }),
  fc.record({ kind: fc.constant('restart' as const), device: fc.nat({ max: DEVICES.length - 1 }) }),
)

/** Replays `ops` into one document (a peer that saw them all) and into the model. */
function replay(ops: readonly Op[]) {
  const doc = new Y.Doc()
  const model = new Map<string, Map<string, unknown>>()
  let stamp = 1
  let nextClient = 1_000
  const clientOf = new Map<WriterId, number>()
  const write = (writer: WriterId, root: string, key: string, value: unknown): void => {
    if (!clientOf.has(writer)) clientOf.set(writer, nextClient++)
    doc.clientID = clientOf.get(writer) ?? 0
    doc.getMap(root).set(key, value)
    let part = model.get(root)
    if (part === undefined) model.set(root, (part = new Map<string, unknown>()))
    part.set(key, value)
  }
  const serverEntry = (user: string): ServerEntry | undefined =>
    asServerEntry(model.get('u:server')?.get(user))
  for (const op of ops) {
    const t = stamp++
    switch (op.kind) {
      case 'server-put': {
        const e = serverEntry(op.user)?.e ?? 0
        write(SERVER_ID, 'u:server', op.user, { e, t, f: { name: op.name } })
        break
      }
      case 'server-delete': {
        const prev = serverEntry(op.user)
        if (prev !== undefined && prev.d !== 1)
          write(SERVER_ID, 'u:server', op.user, { e: prev.e + 1, t, d: 1 })
        break
      }
      case 'device-put': {
        const writer = DEVICES[op.device] ?? asWriterId('d1')
        const e = Math.max(0, (serverEntry(op.user)?.e ?? 0) - op.epochLag)
        write(writer, `u:${writer}`, op.user, { e, f: { title: op.name }, s: { title: t } })
        break
      }
      case 'policy':
        write(SERVER_ID, 'm:server', op.field, { p: 'last-writer-wins', t })
        break
      case 'revoke':
        write(SERVER_ID, 'r:server', DEVICES[op.device] ?? 'd1', { t })
        break
      case 'restart':
        // A crash: the device writes under a fresh clientID from here on.
        clientOf.delete(DEVICES[op.device] ?? asWriterId('d1'))
        break
    }
  }
  return { doc, model }
}

/** The base's roots as plain maps. */
function rootsOf(update: Uint8Array): Map<string, Map<string, unknown>> {
  const doc = new Y.Doc()
  Y.applyUpdate(doc, update)
  const roots = new Map<string, Map<string, unknown>>()
  for (const name of doc.share.keys()) roots.set(name, new Map(doc.getMap(name).entries()))
  return roots
}

/** One user as the replicated state says, from plain maps (no Yjs). */
function userReplica(roots: Map<string, Map<string, unknown>>, user: string): UserReplica {
  const devices: Array<readonly [WriterId, DeviceEntry]> = []
  for (const [root, part] of roots) {
    if (!root.startsWith('u:') || root === 'u:server') continue
    const entry = asDeviceEntry(part.get(user))
    if (entry !== undefined) devices.push([asWriterId(root.slice(2)), entry])
  }
  devices.sort(([a], [b]) => (a < b ? -1 : 1))
  return { server: asServerEntry(roots.get('u:server')?.get(user)), devices }
}

const clientIdFor = (root: string): number =>
  5_000_000 + ([...root].reduce((h, c) => h * 31 + c.charCodeAt(0), 7) % 1_000_000)

describe('generationBase', () => {
  it(`holds exactly the readable live state, one clientID per root, no deletes (seed ${SEED})`, () => {
    fc.assert(
      fc.property(fc.array(opArb, { maxLength: 80 }), fc.subarray(DEVICES), (ops, dropped) => {
        const { doc, model } = replay(ops)
        const dropWriters = new Set<WriterId>(dropped)
        const base = generationBase(doc, { clientIdFor, dropWriters })
        const roots = rootsOf(base.update)

        // The model, with rule 4 and the dropped writers applied.
        const expected = new Map<string, Map<string, unknown>>()
        const epochOf = (user: string): number =>
          asServerEntry(model.get('u:server')?.get(user))?.e ?? 0
        for (const [root, part] of model) {
          const writer = root.slice(2)
          if (root.startsWith('u:') && writer !== 'server' && dropWriters.has(asWriterId(writer)))
            continue
          const live = new Map(
            [...part].filter(
              ([key, value]) =>
                !root.startsWith('u:') ||
                root === 'u:server' ||
                (value as DeviceEntry).e >= epochOf(key),
            ),
          )
          if (live.size > 0) expected.set(root, live)
        }
        expect(roots).toEqual(expected)

        // Every view reads the same, dropped writers aside.
        const before = new Map(
          [...model].filter(([root]) => !dropWriters.has(asWriterId(root.slice(2)))),
        )
        const policiesOf = (of: Map<string, Map<string, unknown>>): PolicyTable =>
          new Map([...(of.get('m:server') ?? [])].map(([f, p]) => [f, p as PolicyEntry]))
        for (const user of USERS) {
          expect(
            resolveUser(asUserId(user), userReplica(roots, user), policiesOf(roots), {}, []),
          ).toEqual(
            resolveUser(asUserId(user), userReplica(before, user), policiesOf(before), {}, []),
          )
        }

        // No history: one clientID per root written, each from 0, no deletes.
        const decoded = Y.decodeUpdate(base.update)
        expect(decoded.ds.clients.size).toBe(0)
        const vector = Y.decodeStateVector(Y.encodeStateVectorFromUpdate(base.update))
        expect([...vector.keys()].sort()).toEqual([...roots.keys()].map(clientIdFor).sort())
        expect(base.stats.clientIdsAfter).toBe(roots.size)
        expect(base.stats.entries).toBe([...roots.values()].reduce((n, p) => n + p.size, 0))
        // Deterministic: the same document gives the same bytes.
        expect(generationBase(doc, { clientIdFor, dropWriters }).update).toEqual(base.update)
      }),
      { seed: SEED, numRuns: 300 },
    )
  })

  it('shrinks a history of overwrites under many clientIDs to the live entries', () => {
    const doc = new Y.Doc()
    for (let round = 0; round < 50; round++) {
      doc.clientID = 10_000 + round
      doc.transact(() => {
        for (let u = 0; u < 20; u++)
          doc.getMap('u:d1').set(`u${u}`, { e: 0, f: { title: `r${round}` }, s: { title: round } })
      })
    }
    const base = generationBase(doc, { clientIdFor })
    expect(base.stats).toMatchObject({ clientIdsBefore: 50, clientIdsAfter: 1, entries: 20 })
    expect(base.update.byteLength).toBeLessThan(Y.encodeStateAsUpdate(doc).byteLength / 5)
    expect(rootsOf(base.update).get('u:d1')?.get('u7')).toEqual({
      e: 0,
      f: { title: 'r49' },
      s: { title: 49 },
    })
  })

  it('refuses one clientID for two roots', () => {
    const doc = new Y.Doc()
    doc.getMap('u:server').set('a', { e: 0, t: 1, f: { name: 'A' } })
    doc.getMap('u:d1').set('a', { e: 0, f: { title: 'T' }, s: { title: 2 } })
    expect(() => generationBase(doc, { clientIdFor: () => 7 })).toThrow(/two roots/)
  })
})
