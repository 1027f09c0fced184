/**
 * Forged Yjs updates for the authorisation tests: a v1 update encoder that
 * writes exactly the structs it is given (items under any clientID and
 * clock, nested items, items without a key, GC and skip structs, any delete
 * set), and a catalogue of forgeries built against a receiver's document,
 * each aimed at one check of core/authorize.ts.
 */
import * as encoding from 'lib0/encoding'
import * as Y from 'yjs'
import type { CheckName } from '../../core/authorize.js'
import { limits } from '../../core/limits.js'

/** An item to encode: ContentAny values, a string, a deleted run or a nested map. */
export interface ForgedItem {
  readonly kind: 'item'
  readonly client: number
  readonly clock: number
  readonly origin?: Y.ID
  readonly parent?: { readonly root: string } | { readonly id: Y.ID }
  readonly key?: string
  readonly content:
    | { readonly any: readonly unknown[] }
    | { readonly string: string }
    | { readonly deleted: number }
    | { readonly map: true }
}

/** A GC or skip range to encode. */
export interface ForgedRange {
  readonly kind: 'gc' | 'skip'
  readonly client: number
  readonly clock: number
  readonly length: number
}

/** A struct to encode. */
export type ForgedStruct = ForgedItem | ForgedRange

/** A delete-set range: client, first clock, length. */
export type ForgedDelete = readonly [client: number, clock: number, length: number]

/** Encodes structs (grouped per client, in the order given) and a delete set as a Yjs v1 update. */
export function encodeForged(
  structs: readonly ForgedStruct[],
  deletes: readonly ForgedDelete[] = [],
): Uint8Array {
  const e = encoding.createEncoder()
  const byClient = new Map<number, ForgedStruct[]>()
  for (const s of structs) byClient.set(s.client, [...(byClient.get(s.client) ?? []), s])
  encoding.writeVarUint(e, byClient.size)
  for (const [client, list] of byClient) {
    encoding.writeVarUint(e, list.length)
    encoding.writeVarUint(e, client)
    encoding.writeVarUint(e, (list[0] as ForgedStruct).clock)
    for (const s of list) writeStruct(e, s)
  }
  const dsByClient = new Map<number, Array<readonly [number, number]>>()
  for (const [client, clock, length] of deletes)
    dsByClient.set(client, [...(dsByClient.get(client) ?? []), [clock, length]])
  encoding.writeVarUint(e, dsByClient.size)
  for (const [client, ranges] of dsByClient) {
    encoding.writeVarUint(e, client)
    encoding.writeVarUint(e, ranges.length)
    for (const [clock, length] of ranges) {
      encoding.writeVarUint(e, clock)
      encoding.writeVarUint(e, length)
    }
  }
  return encoding.toUint8Array(e)
}

function writeStruct(e: encoding.Encoder, s: ForgedStruct): void {
  if (s.kind !== 'item') {
    encoding.writeUint8(e, s.kind === 'gc' ? 0 : 10)
    encoding.writeVarUint(e, s.length)
    return
  }
  const c = s.content
  const ref = 'any' in c ? 8 : 'string' in c ? 4 : 'deleted' in c ? 1 : 7
  const info = ref | (s.origin === undefined ? 0 : 0x80) | (s.key === undefined ? 0 : 0x20)
  encoding.writeUint8(e, info)
  if (s.origin !== undefined) {
    encoding.writeVarUint(e, s.origin.client)
    encoding.writeVarUint(e, s.origin.clock)
  } else {
    const parent = s.parent ?? { root: 'u:nobody' }
    if ('root' in parent) {
      encoding.writeVarUint(e, 1)
      encoding.writeVarString(e, parent.root)
    } else {
      encoding.writeVarUint(e, 0)
      encoding.writeVarUint(e, parent.id.client)
      encoding.writeVarUint(e, parent.id.clock)
    }
    if (s.key !== undefined) encoding.writeVarString(e, s.key)
  }
  if ('any' in c) {
    encoding.writeVarUint(e, c.any.length)
    for (const value of c.any)
      encoding.writeAny(e, value as Parameters<typeof encoding.writeAny>[1])
  } else if ('string' in c) encoding.writeVarString(e, c.string)
  else if ('deleted' in c) encoding.writeVarUint(e, c.deleted)
  else encoding.writeVarUint(e, 1) // YMap type ref
}

/** The kinds of forgery, each aimed at the check that must refuse it. */
export const FORGERIES = {
  setServer: 'root',
  setPolicy: 'root',
  deleteServer: 'delete',
  deleteSpanning: 'delete',
  deleteUnknown: 'delete',
  serverClientItem: 'clientBinding',
  otherDeviceClientItem: 'clientBinding',
  nestedOwn: 'flat',
  nestedServer: 'root',
  gc: 'gc',
  skip: 'skip',
  stamp: 'stamp',
  epoch: 'epoch',
  extraKey: 'entryShape',
  protoKey: 'entryShape',
  badField: 'schema',
  stringContent: 'content',
  mapContent: 'content',
  noKey: 'key',
  longKey: 'key',
  badRoot: 'root',
  manyClients: 'size',
} as const satisfies Record<string, CheckName>

/** One forgery kind. */
export type ForgeryKind = keyof typeof FORGERIES

/** A forgery: its kind and the random choices that shape it. */
export interface ForgeryPlan {
  readonly kind: ForgeryKind
  /** Picks among the receiver's users, clients, bad values. */
  readonly pick: number
  /** A fresh Yjs clientID for the forger's own structs. */
  readonly fresh: number
}

/** What a forgery is built against. */
export interface ForgeryTarget {
  /** The receiver's document. */
  readonly doc: Y.Doc
  /** The receiver's clock, ms. */
  readonly now: number
  /** The part the forger may write (its own, or one it relays). */
  readonly ownRoot: string
  /** A part the forger may write into that holds entries (for nested items). */
  readonly entryRoot: string
  /** The server's Yjs clientID and another device's, as the receiver holds them. */
  readonly serverClient: number
  readonly otherClient: number
}

const at = <T>(list: readonly T[], pick: number): T => list[pick % list.length] as T

/** A valid device entry for `userId` as the receiver sees it (right epoch, fresh stamp). */
function validEntry(target: ForgeryTarget, userId: string): Record<string, unknown> {
  const server = target.doc.getMap('u:server').get(userId) as { e?: number } | undefined
  return { e: server?.e ?? 0, f: { name: 'Mallory' }, s: { name: target.now * 1000 } }
}

/** The live items of a root, as (key, id). */
function liveItems(doc: Y.Doc, root: string): Array<{ key: string; id: Y.ID }> {
  const type = doc.getMap(root)
  const out: Array<{ key: string; id: Y.ID }> = []
  for (const [key, item] of type._map) if (!item.deleted) out.push({ key, id: item.id })
  return out
}

/** Builds the forged update of `plan` against `target`. */
export function forge(plan: ForgeryPlan, target: ForgeryTarget): Uint8Array {
  const { doc, ownRoot } = target
  const fresh = plan.fresh
  const userId = at(['u1', 'u2', 'u4', 'u-new'], plan.pick)
  /** An item of the forger in its own part; `key` null: an item without a map key. */
  const own = (value: unknown, key: string | null = userId, client = fresh): ForgedItem => ({
    kind: 'item',
    client,
    clock: Y.getState(doc.store, client),
    parent: { root: ownRoot },
    ...(key === null ? {} : { key }),
    content: { any: [value] },
  })
  const serverItem = at(liveItems(doc, 'u:server'), plan.pick)
  switch (plan.kind) {
    case 'setServer':
      return viaYjs(doc, fresh, (d) =>
        d.getMap('u:server').set(userId, { e: 0, t: target.now * 1000, f: { name: 'Mallory' } }),
      )
    case 'setPolicy':
      return viaYjs(doc, fresh, (d) =>
        d.getMap('m:server').set('name', { p: 'device-specific', t: target.now * 1000 }),
      )
    case 'deleteServer':
      return encodeForged([], [[serverItem.id.client, serverItem.id.clock, 1]])
    case 'deleteSpanning': {
      const mine = own(validEntry(target, userId))
      return encodeForged(
        [mine],
        [
          [fresh, mine.clock, 1],
          [serverItem.id.client, serverItem.id.clock, 1],
        ],
      )
    }
    case 'deleteUnknown': {
      // Ids of the other device's client that nobody has sent yet: they
      // would delete its next writes when they come.
      const state = Y.getState(doc.store, target.otherClient)
      return encodeForged([], [[target.otherClient, state, 5 + (plan.pick % 50)]])
    }
    case 'serverClientItem':
      return encodeForged([own(validEntry(target, userId), userId, target.serverClient)])
    case 'otherDeviceClientItem':
      return encodeForged([own(validEntry(target, userId), userId, target.otherClient)])
    case 'nestedOwn':
    case 'nestedServer': {
      const under =
        plan.kind === 'nestedServer'
          ? serverItem.id
          : at(liveItems(doc, target.entryRoot), plan.pick).id
      return encodeForged([
        {
          kind: 'item',
          client: fresh,
          clock: 0,
          parent: { id: under },
          key: userId,
          content: { any: [validEntry(target, userId)] },
        },
      ])
    }
    case 'gc': {
      const client = at([fresh, target.serverClient, target.otherClient], plan.pick)
      return encodeForged([
        { kind: 'gc', client, clock: Y.getState(doc.store, client), length: 1 + (plan.pick % 9) },
      ])
    }
    case 'skip': {
      const skip: ForgedStruct = {
        kind: 'skip',
        client: fresh,
        clock: 0,
        length: 1 + (plan.pick % 9),
      }
      if (plan.pick % 2 === 0) return encodeForged([skip])
      // A skip and then an item past it: Yjs would keep the item pending.
      return encodeForged([skip, { ...own(validEntry(target, userId)), clock: skip.length }])
    }
    case 'stamp': {
      const bad = at(
        [
          2 ** 53,
          Number.POSITIVE_INFINITY,
          -1,
          1.5,
          (target.now + 2 * limits.stampSkewMsMax) * 1000,
          Number.NaN,
        ],
        plan.pick,
      )
      return encodeForged([own({ ...validEntry(target, userId), s: { name: bad } })])
    }
    case 'epoch': {
      const valid = validEntry(target, userId).e as number
      const bad = at([valid + 1, 1e9, Number.POSITIVE_INFINITY, -1, 0.5, Number.NaN], plan.pick)
      return encodeForged([own({ ...validEntry(target, userId), e: bad })])
    }
    case 'extraKey':
      return encodeForged([
        own({
          ...validEntry(target, userId),
          [at(['x', 'pad', 'f2'], plan.pick)]: 'y'.repeat(1000),
        }),
      ])
    case 'protoKey': {
      // A `__proto__` key: decoded, it is the object's prototype, where
      // checks of own keys did not look (a hostile probe).
      const entry = validEntry(target, userId)
      const where = at(['s', 'f', 'entry'] as const, plan.pick)
      const hidden = at(
        [{ title: Number.MAX_SAFE_INTEGER }, { title: 'not a stamp' }, { name: 'Mallory' }],
        plan.pick >> 2,
      )
      const withProto = (value: object): object =>
        Object.defineProperty({ ...value }, '__proto__', {
          value: hidden,
          enumerable: true,
          configurable: true,
          writable: true,
        })
      if (where === 'entry') return encodeForged([own(withProto(entry))])
      return encodeForged([own({ ...entry, [where]: withProto(entry[where] as object) })])
    }
    case 'badField': {
      const entry = validEntry(target, userId)
      const bad = at(
        [
          { ...entry, f: { nickname: 'x' } },
          { ...entry, s: { name: target.now * 1000, nickname: target.now * 1000 } },
          { ...entry, f: { name: 42 } },
        ],
        plan.pick,
      )
      return encodeForged([own(bad)])
    }
    case 'stringContent':
      return encodeForged([
        {
          kind: 'item',
          client: fresh,
          clock: 0,
          parent: { root: ownRoot },
          key: userId,
          content: { string: 'Mallory' },
        },
      ])
    case 'mapContent':
      return encodeForged([
        {
          kind: 'item',
          client: fresh,
          clock: 0,
          parent: { root: ownRoot },
          key: userId,
          content: { map: true },
        },
      ])
    case 'noKey':
      return encodeForged([own({ ...validEntry(target, userId), e: 0 }, null)])
    case 'longKey': {
      const key = at(['k'.repeat(limits.userIdCharsMax + 1), 'bell\u0007', ''], plan.pick)
      return encodeForged([own({ ...validEntry(target, userId), e: 0 }, key)])
    }
    case 'badRoot': {
      const root = at(
        ['x:junk', `u:${'d'.repeat(limits.writerIdCharsMax + 1)}`, 'u:bad id', 'u:'],
        plan.pick,
      )
      return encodeForged([{ ...own(validEntry(target, userId)), parent: { root } }])
    }
    case 'manyClients': {
      const structs: ForgedStruct[] = []
      for (let i = 0; i <= limits.updateNewClientsMax; i++) {
        structs.push({
          ...own({ e: 0, f: { name: 'M' }, s: { name: target.now * 1000 } }, `m${i}`),
          client: (fresh + i + 1) >>> 0,
          clock: 0,
        })
      }
      return encodeForged(structs)
    }
  }
}

/** An update made with Yjs itself: `write` runs on a copy of `doc` under clientID `client`. */
function viaYjs(doc: Y.Doc, client: number, write: (d: Y.Doc) => void): Uint8Array {
  const copy = new Y.Doc()
  Y.applyUpdate(copy, Y.encodeStateAsUpdate(doc))
  copy.clientID = client
  const before = Y.encodeStateVector(copy)
  write(copy)
  return Y.encodeStateAsUpdate(copy, before)
}
