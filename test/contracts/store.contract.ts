/**
 * The behaviour every {@link Store} implementation must have. A test file
 * calls {@link runStoreContract} once per implementation; the suite is the
 * definition of "a Store" that the rest of rostersync relies on.
 */
import fc from 'fast-check'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { hasCode } from '../../core/errors.js'
import type { RangeOptions, Store, StoreOp } from '../../core/store.js'

/** A fresh, empty store under test, plus how to reopen it and clean it up. */
export interface StoreFixture {
  readonly store: Store
  /** Opens the same data again after `store` was closed; absent for volatile stores. */
  readonly reopen?: () => Promise<Store>
  /** Releases everything the fixture made (closing any store still open). */
  readonly cleanup: () => Promise<void>
}

const bytes = (...values: number[]): Uint8Array => new Uint8Array(values)
const text = (value: string): Uint8Array => new TextEncoder().encode(value)

/** Every entry of a scan, as `[key, value]` pairs. */
async function collect(store: Store, options: RangeOptions): Promise<[string, Uint8Array][]> {
  const entries: [string, Uint8Array][] = []
  for await (const [key, value] of store.range(options)) entries.push([key, value])
  return entries
}

async function keysOf(store: Store, options: RangeOptions): Promise<string[]> {
  return (await collect(store, options)).map(([key]) => key)
}

/**
 * Byte equality for large values: `toEqual` walks a typed array element by
 * element through its generic deep-equality and takes seconds on 1 MiB.
 */
function expectSameBytes(actual: Uint8Array | undefined, expected: Uint8Array): void {
  expect(actual?.byteLength).toBe(expected.byteLength)
  const at = expected.findIndex((byte, i) => actual?.[i] !== byte)
  expect(at, `first differing byte at index ${at}`).toBe(-1)
}

/** Asserts that `action` rejects with a rostersync error carrying `STORE_CLOSED`. */
async function expectClosed(action: () => Promise<unknown>): Promise<void> {
  const error = await action().then(
    () => undefined,
    (reason: unknown) => reason,
  )
  expect(hasCode(error, 'STORE_CLOSED'), `expected STORE_CLOSED, got ${String(error)}`).toBe(true)
}

/** Runs the Store contract against the stores `make` creates (one per test). */
export function runStoreContract(name: string, make: () => Promise<StoreFixture>): void {
  describe(`Store contract: ${name}`, () => {
    let fixture: StoreFixture
    let store: Store

    beforeEach(async () => {
      fixture = await make()
      store = fixture.store
    })

    afterEach(async () => {
      await fixture.cleanup()
    })

    describeValues(() => store)
    describeBatch(() => store)
    describeRange(() => store)
    describeClose(() => store)
    describeReopen(() => fixture)
    describeModel(make)
  })
}

function describeValues(current: () => Store): void {
  describe('get / put / del', () => {
    it('gets undefined for a missing key', async () => {
      expect(await current().get('missing')).toBeUndefined()
    })

    it('round-trips bytes, including every byte value', async () => {
      const all = new Uint8Array(256).map((_, i) => i)
      await current().put('k', all)
      expect(await current().get('k')).toEqual(all)
    })

    it('round-trips an empty value (distinct from a missing one)', async () => {
      await current().put('empty', new Uint8Array(0))
      const value = await current().get('empty')
      expect(value).toBeInstanceOf(Uint8Array)
      expect(value?.byteLength).toBe(0)
    })

    it('round-trips a 1 MiB value', async () => {
      const big = new Uint8Array(1024 * 1024).map((_, i) => (i * 31 + 7) & 0xff)
      await current().put('big', big)
      expectSameBytes(await current().get('big'), big)
    })

    it('returns plain Uint8Array values (never a Buffer)', async () => {
      await current().put('k', bytes(1, 2))
      await current().batch([{ type: 'put', key: 'b', value: bytes(3) }])
      const got = await current().get('k')
      expect(got && Object.getPrototypeOf(got)).toBe(Uint8Array.prototype)
      for (const [, value] of await collect(current(), { gte: '', lt: '\uffff' })) {
        expect(Object.getPrototypeOf(value)).toBe(Uint8Array.prototype)
      }
    })

    it('respects the bounds of a value that is a view into a larger buffer', async () => {
      const backing = bytes(9, 9, 1, 2, 3, 9, 9)
      await current().put('view', backing.subarray(2, 5))
      expect(await current().get('view')).toEqual(bytes(1, 2, 3))
    })

    it('is not affected by later changes to a written or a read array', async () => {
      const written = bytes(1, 2, 3)
      await current().put('k', written)
      written[0] = 99
      const read = await current().get('k')
      expect(read).toEqual(bytes(1, 2, 3))
      if (read) read[1] = 99
      expect(await current().get('k')).toEqual(bytes(1, 2, 3))
    })

    it('overwrites a value', async () => {
      await current().put('k', bytes(1))
      await current().put('k', bytes(2, 2))
      expect(await current().get('k')).toEqual(bytes(2, 2))
      expect(await keysOf(current(), { gte: '', lt: '\uffff' })).toEqual(['k'])
    })

    it('deletes a key, and deleting an absent key is fine', async () => {
      await current().put('a', bytes(1))
      await current().put('b', bytes(2))
      await current().del('a')
      await current().del('never-there')
      expect(await current().get('a')).toBeUndefined()
      expect(await current().get('b')).toEqual(bytes(2))
    })
  })
}

function describeBatch(current: () => Store): void {
  describe('batch', () => {
    it('applies mixed puts and deletes together', async () => {
      await current().put('old', bytes(0))
      await current().put('keep', bytes(7))
      await current().batch([
        { type: 'put', key: 'a', value: bytes(1) },
        { type: 'del', key: 'old' },
        { type: 'put', key: 'b', value: bytes(2) },
        { type: 'del', key: 'absent' },
      ])
      const entries = await collect(current(), { gte: '', lt: '\uffff' })
      expect(entries).toEqual([
        ['a', bytes(1)],
        ['b', bytes(2)],
        ['keep', bytes(7)],
      ])
    })

    it('applies operations on the same key in order', async () => {
      await current().batch([
        { type: 'put', key: 'x', value: bytes(1) },
        { type: 'del', key: 'x' },
        { type: 'del', key: 'y' },
        { type: 'put', key: 'y', value: bytes(2) },
        { type: 'put', key: 'y', value: bytes(3) },
      ])
      expect(await current().get('x')).toBeUndefined()
      expect(await current().get('y')).toEqual(bytes(3))
    })

    it('accepts an empty batch as a no-op', async () => {
      await current().put('k', bytes(1))
      await current().batch([])
      expect(await collect(current(), { gte: '', lt: '\uffff' })).toEqual([['k', bytes(1)]])
    })

    it('is not affected by later changes to the ops array or its values', async () => {
      const value = bytes(1)
      const ops: StoreOp[] = [{ type: 'put', key: 'k', value }]
      await current().batch(ops)
      value[0] = 99
      ops.push({ type: 'del', key: 'k' })
      expect(await current().get('k')).toEqual(bytes(1))
    })
  })
}

function describeRange(current: () => Store): void {
  describe('range', () => {
    const keys = ['a', 'b', 'ba', 'bb', 'c', 'd']

    beforeEach(async () => {
      await current().batch(keys.map((key) => ({ type: 'put', key, value: text(key) })))
    })

    it('yields entries in key order with their values', async () => {
      const entries = await collect(current(), { gte: '', lt: '\uffff' })
      expect(entries).toEqual(keys.map((key) => [key, text(key)]))
    })

    it('includes gte and excludes lt', async () => {
      expect(await keysOf(current(), { gte: 'b', lt: 'c' })).toEqual(['b', 'ba', 'bb'])
      expect(await keysOf(current(), { gte: 'b', lt: 'bb' })).toEqual(['b', 'ba'])
      expect(await keysOf(current(), { gte: 'bb', lt: 'bb\u0000' })).toEqual(['bb'])
    })

    it('is empty when nothing is in range or the range is inverted', async () => {
      expect(await keysOf(current(), { gte: 'e', lt: 'z' })).toEqual([])
      expect(await keysOf(current(), { gte: 'b', lt: 'b' })).toEqual([])
      expect(await keysOf(current(), { gte: 'c', lt: 'a' })).toEqual([])
    })

    it('honours limit, including 0 and a limit past the end', async () => {
      expect(await keysOf(current(), { gte: 'b', lt: 'z', limit: 2 })).toEqual(['b', 'ba'])
      expect(await keysOf(current(), { gte: 'b', lt: 'z', limit: 0 })).toEqual([])
      expect(await keysOf(current(), { gte: 'c', lt: 'z', limit: 10 })).toEqual(['c', 'd'])
    })

    it('scans in reverse, with limit taking from the top', async () => {
      expect(await keysOf(current(), { gte: 'b', lt: 'c', reverse: true })).toEqual([
        'bb',
        'ba',
        'b',
      ])
      expect(await keysOf(current(), { gte: 'a', lt: 'd', reverse: true, limit: 2 })).toEqual([
        'c',
        'bb',
      ])
    })

    it('can be left early, and the store stays usable', async () => {
      const seen: string[] = []
      for await (const [key] of current().range({ gte: '', lt: '\uffff' })) {
        seen.push(key)
        if (seen.length === 2) break
      }
      expect(seen).toEqual(['a', 'b'])
      await current().put('e', bytes(5))
      expect(await keysOf(current(), { gte: 'd', lt: 'z' })).toEqual(['d', 'e'])
    })

    it('can be iterated twice, each time from the start', async () => {
      const scan = current().range({ gte: 'c', lt: 'z' })
      const first: string[] = []
      for await (const [key] of scan) first.push(key)
      const second: string[] = []
      for await (const [key] of scan) second.push(key)
      expect(first).toEqual(['c', 'd'])
      expect(second).toEqual(['c', 'd'])
    })
  })
}

function describeClose(current: () => Store): void {
  describe('close', () => {
    it('rejects every later call with STORE_CLOSED', async () => {
      const store = current()
      await store.put('k', bytes(1))
      await store.close()
      await expectClosed(() => store.get('k'))
      await expectClosed(() => store.put('k', bytes(2)))
      await expectClosed(() => store.del('k'))
      await expectClosed(() => store.batch([{ type: 'del', key: 'k' }]))
      await expectClosed(() => store.batch([]))
      await expectClosed(() => collect(store, { gte: '', lt: '\uffff' }))
    })

    it('can be closed twice', async () => {
      await current().close()
      await current().close()
    })
  })
}

function describeReopen(current: () => StoreFixture): void {
  describe('durability', () => {
    it('keeps data across close and reopen (when the store is durable)', async (context) => {
      const { store, reopen } = current()
      if (reopen === undefined) return context.skip('volatile store: nothing to reopen')
      await store.put('a', bytes(1))
      await store.put('gone', bytes(0))
      await store.del('gone')
      await store.batch([
        { type: 'put', key: 'b', value: bytes(2, 2) },
        { type: 'put', key: 'empty', value: new Uint8Array(0) },
      ])
      await store.close()

      const reopened = await reopen()
      try {
        expect(await collect(reopened, { gte: '', lt: '\uffff' })).toEqual([
          ['a', bytes(1)],
          ['b', bytes(2, 2)],
          ['empty', new Uint8Array(0)],
        ])
      } finally {
        await reopened.close()
      }
    })
  })
}

/** One step of the model-based property. */
type ModelOp =
  | { readonly type: 'put'; readonly key: string; readonly value: Uint8Array }
  | { readonly type: 'del'; readonly key: string }
  | { readonly type: 'batch'; readonly ops: readonly StoreOp[] }

// A small key alphabet so that random operations collide (overwrite, delete
// present keys) and random bounds land between and on real keys. ASCII only:
// that is the key domain the Store interface promises to order consistently.
const keyArb = fc.string({ unit: fc.constantFrom('a', 'b', 'c', '~'), minLength: 1, maxLength: 3 })
const boundArb = fc.string({ unit: fc.constantFrom('a', 'b', 'c', '~'), maxLength: 3 })
const valueArb = fc.uint8Array({ maxLength: 8 })
const storeOpArb: fc.Arbitrary<StoreOp> = fc.oneof(
  fc.record({ type: fc.constant('put' as const), key: keyArb, value: valueArb }),
  fc.record({ type: fc.constant('del' as const), key: keyArb }),
)
const modelOpArb: fc.Arbitrary<ModelOp> = fc.oneof(
  storeOpArb,
  fc.record({ type: fc.constant('batch' as const), ops: fc.array(storeOpArb, { maxLength: 5 }) }),
)
const rangeArb: fc.Arbitrary<RangeOptions> = fc.record(
  {
    gte: boundArb,
    lt: boundArb,
    limit: fc.nat({ max: 6 }),
    reverse: fc.boolean(),
  },
  { requiredKeys: ['gte', 'lt'] },
)

function applyToModel(model: Map<string, Uint8Array>, op: StoreOp): void {
  if (op.type === 'put') model.set(op.key, op.value)
  else model.delete(op.key)
}

function scanModel(model: Map<string, Uint8Array>, range: RangeOptions): [string, Uint8Array][] {
  const inRange = [...model.entries()]
    .filter(([key]) => key >= range.gte && key < range.lt)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
  if (range.reverse === true) inRange.reverse()
  return inRange.slice(0, range.limit ?? Infinity)
}

async function applyToStore(store: Store, op: ModelOp): Promise<void> {
  if (op.type === 'put') await store.put(op.key, op.value)
  else if (op.type === 'del') await store.del(op.key)
  else await store.batch(op.ops)
}

function describeModel(make: () => Promise<StoreFixture>): void {
  describe('model', () => {
    it('matches a Map model for random put/del/batch sequences and scans', async () => {
      const property = fc.asyncProperty(
        fc.array(modelOpArb, { maxLength: 20 }),
        fc.array(rangeArb, { minLength: 1, maxLength: 3 }),
        async (ops, ranges) => {
          const { store, cleanup } = await make()
          try {
            const model = new Map<string, Uint8Array>()
            for (const op of ops) {
              await applyToStore(store, op)
              for (const storeOp of op.type === 'batch' ? op.ops : [op]) {
                applyToModel(model, storeOp)
              }
            }
            for (const range of [{ gte: '', lt: '\u007f' }, ...ranges]) {
              expect(await collect(store, range)).toEqual(scanModel(model, range))
            }
          } finally {
            await cleanup()
          }
        },
      )
      // fast-check reports the seed and the shrunk counterexample on failure.
      await fc.assert(property, { numRuns: 100 })
    })
  })
}
