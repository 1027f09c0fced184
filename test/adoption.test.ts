/**
 * Rule 2's adoption step (`adoptionFor`, core/resolve.ts) answers "nothing
 * to adopt" at once when the server holds a live record and no device entry
 * stamps a shared field the server has vacant. This checks that shortcut
 * against the whole resolution on any replica: every server entry (live,
 * deleted, absent, with clears), device entries of any epoch, vacant and
 * filled values, and every policy.
 *
 * Random; the seed is printed and replays the run:
 * `ROSTERSYNC_SEED=<seed> npx vitest run test/adoption.test.ts`.
 */
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import type { DeviceEntry, FieldPolicy, PolicyEntry, ServerEntry } from '../core/entries.js'
import { asWriterId, SERVER_ID } from '../core/ids.js'
import { adoptionFor, policyOf, resolveReplicated, type UserReplica } from '../core/resolve.js'
import { isVacant } from '../core/vacant.js'

const seed = Number(process.env.ROSTERSYNC_SEED ?? Date.now() % 1_000_000)

const FIELDS = ['name', 'email', 'card'] as const
const field = fc.constantFrom(...FIELDS)
/** Vacant values (absent, null, '', [], empty bytes) and filled ones. */
const value = fc.constantFrom<unknown>(undefined, null, '', [], new Uint8Array(0), 'a', 'b', ['x'])
const stamp = fc.integer({ min: 1, max: 20 })

/** A record of some of the fields, with absent values left out. */
const values = fc
  .dictionary(field, value, { maxKeys: 3 })
  .map((f) => Object.fromEntries(Object.entries(f).filter(([, v]) => v !== undefined)))
const stamps = fc.dictionary(field, stamp, { maxKeys: 3 })

const serverEntry: fc.Arbitrary<ServerEntry | undefined> = fc.option(
  fc.record(
    {
      e: fc.integer({ min: 0, max: 2 }),
      t: stamp,
      d: fc.constant(1 as const),
      f: values,
      s: stamps,
      x: stamps,
      a: fc.dictionary(
        field,
        fc.array(fc.tuple(stamp, fc.constantFrom('device-0', 'device-1', 'device-2'), stamp), {
          minLength: 1,
          maxLength: 2,
        }),
        { maxKeys: 3 },
      ),
    },
    { requiredKeys: ['e', 't'] },
  ) as fc.Arbitrary<ServerEntry>,
  { nil: undefined },
)
const deviceEntry: fc.Arbitrary<DeviceEntry> = fc.record({
  e: fc.integer({ min: 0, max: 2 }),
  f: values,
  s: stamps,
}) as fc.Arbitrary<DeviceEntry>
const replica: fc.Arbitrary<UserReplica> = fc.record({
  server: serverEntry,
  devices: fc
    .array(deviceEntry, { maxLength: 3 })
    .map((entries) => entries.map((entry, i) => [asWriterId(`device-${i}`), entry] as const)),
})
const policies = fc
  .dictionary(
    field,
    fc.record({
      p: fc.constantFrom<FieldPolicy>('shared', 'device-specific', 'last-writer-wins'),
      t: fc.integer({ min: 0, max: 20 }),
    }),
    { maxKeys: 3 },
  )
  .map((table) => new Map<string, PolicyEntry>(Object.entries(table)))

/** The device whose clear voided an adopted value. */
const ANY_DEVICE: unknown = expect.stringMatching(/^device-/)

/**
 * The adoption the whole resolution gives: shared fields a device's value
 * fills, and adopted values the view no longer shows (a device's clear made
 * before the adoption replaced them).
 */
function resolvedAdoption(
  user: UserReplica,
  table: ReadonlyMap<string, PolicyEntry>,
): { creates: boolean; fields: Map<string, unknown>; vacated: Map<string, unknown> } | undefined {
  const resolved = resolveReplicated(user, table)
  if (resolved === undefined) return undefined
  const fields = new Map<string, unknown>()
  for (const [name, result] of resolved)
    if (result.source !== SERVER_ID && policyOf(table, name) === 'shared') fields.set(name, result)
  const creates = user.server === undefined || user.server.d === 1
  const vacated = new Map<string, unknown>()
  if (!creates)
    for (const name of Object.keys(user.server?.a ?? {}))
      if (
        policyOf(table, name) === 'shared' &&
        !isVacant(user.server?.f?.[name]) &&
        !resolved.has(name)
      )
        vacated.set(name, ANY_DEVICE)
  return creates || fields.size > 0 || vacated.size > 0 ? { creates, fields, vacated } : undefined
}

describe('adoptionFor', () => {
  it(`finds what the whole resolution finds, on any replica (seed ${seed})`, () => {
    console.log(
      `adoption: seed ${seed} — replay: ROSTERSYNC_SEED=${seed} npx vitest run test/adoption.test.ts`,
    )
    let adopted = 0
    let vacated = 0
    // Vacated fills are rare (about 6 in 10,000 runs): more rounds, each
    // seeded from the seed, until one came (one round in 400 sees none).
    for (let round = 0; round < 5 && (round === 0 || vacated === 0); round++) {
      fc.assert(
        fc.property(replica, policies, (user, table) => {
          const found = adoptionFor(user, table)
          const { creates, fields, vacated: voids } = found ?? {}
          expect(found && { creates, fields, vacated: voids }).toEqual(
            resolvedAdoption(user, table),
          )
          if (found !== undefined && found.fields.size > 0 && !found.creates) adopted++
          if (found !== undefined && found.vacated.size > 0) vacated++
        }),
        { seed: seed + round, numRuns: 10_000 },
      )
    }
    // The runs reach fills of a live server record, not only the shortcut.
    expect(adopted).toBeGreaterThan(50)
    expect(vacated).toBeGreaterThan(0)
  })
})
