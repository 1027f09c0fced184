/**
 * The mutants of `npm run mutants` (issue 12): small deliberate bugs, each
 * applied alone to a copy of the checkout, and the tests or simulator seeds
 * that must catch it. docs/MUTANTS.md says how to add one.
 */
import type { Edit } from './locate.js'

/**
 * What runs against a mutant: one test file (optionally only the tests whose
 * name holds `name`, vitest's `-t`), or one simulator run (`rostersync sim`
 * with these arguments). It catches the mutant when it fails. A property
 * test is given a fixed seed, so that a run is repeatable.
 */
export type Catcher =
  | {
      readonly test: string
      readonly name?: string
      /** Environment of the run, e.g. a property test's seed (`ROSTERSYNC_SEED`). */
      readonly env?: Readonly<Record<string, string>>
    }
  | { readonly sim: readonly string[] }

/** One deliberate bug. */
export interface Mutant {
  /** Short, kebab-case; `--only` takes it. */
  readonly name: string
  /** The bug in a sentence. */
  readonly bug: string
  /** Applied in order; each snippet must match exactly one place. */
  readonly edits: readonly Edit[]
  /** Run in order, cheapest first; the first that fails caught it. */
  readonly catchers: readonly Catcher[]
}

/** The small site the oracle's own docs use (docs/SIMULATION.md, "It bites"). */
const SMALL_SITE = ['--devices', '6', '--ops', '150', '--days', '2']

/**
 * Every kind of forged update over every path (update, step 2, answer to
 * step 1, LAN, simulator), stopping at the first that gets through: the
 * property of 200 runs that shrinks a failure can take minutes to do so.
 */
const AUTHORIZE_EVERY_PATH: Catcher = {
  test: 'test/authorize-paths.test.ts',
  name: 'every forgery kind on every path at least once',
  env: { ROSTERSYNC_SEED: '1' },
}

/** The mutants, in the order of issue 12's list. */
export const MUTANTS: readonly Mutant[] = [
  {
    name: 'server-wins-flipped',
    bug: 'rule 1 flipped for one field (title): a device value beats the server value',
    edits: [
      {
        file: 'core/resolve.ts',
        find: 'if (!isVacant(value)) return { view: { value: value as FieldValue, source: SERVER_ID } }',
        replace:
          "if (!isVacant(value) && field !== 'title') return { view: { value: value as FieldValue, source: SERVER_ID } }",
      },
    ],
    catchers: [
      { test: 'test/rules-every-field.test.ts', name: 'rule 1' },
      { sim: ['--seed', '1', ...SMALL_SITE] },
    ],
  },
  {
    name: 'adoption-by-arrival',
    bug: 'rule 2 by arrival order: the first fill to reach the server stays, though a later fill was made before the adoption',
    edits: [
      {
        file: 'core/resolve.ts',
        find: 'const rival = rivalAt(devices, field, floor, level)',
        replace: 'const rival = undefined as DeviceWrite | undefined',
      },
    ],
    catchers: [{ test: 'test/rules.test.ts', name: 'the later fill wins' }],
  },
  {
    name: 'empty-list-filled',
    bug: 'an empty list counts as a value (not vacant), so it blocks device fills',
    edits: [
      {
        file: 'core/vacant.ts',
        find: 'if (Array.isArray(value)) return value.length === 0',
        replace: 'if (Array.isArray(value)) return false',
      },
    ],
    catchers: [{ test: 'test/unit.test.ts', name: 'isVacant' }],
  },
  {
    name: 'no-delete-check',
    bug: 'the authorisation check of the deletes an update makes is skipped',
    edits: [
      {
        file: 'core/authorize.ts',
        find: "if (!this.on('delete')) return true",
        replace: "if (!this.on('delete') || this.doc !== undefined) return true",
      },
    ],
    catchers: [AUTHORIZE_EVERY_PATH],
  },
  {
    name: 'no-step2-check',
    bug: 'sync step 2 is applied without the check every other update goes through',
    edits: [
      {
        file: 'peers/sync-session.ts',
        find: "if (message.type === 'sync-step2') await apply(message.update)",
        replace:
          "if (message.type === 'sync-step2') await replica.applyRemote(message.update, connection.id)",
      },
    ],
    catchers: [AUTHORIZE_EVERY_PATH],
  },
  {
    name: 'hlc-observe-one-low',
    bug: "the replica observes other writers' stamps one too low",
    edits: [
      {
        file: 'peers/replica.ts',
        find: "if (typeof value.t === 'number') this.hlc.observe(value.t)",
        replace: "if (typeof value.t === 'number') this.hlc.observe(value.t - 1)",
      },
      {
        file: 'peers/replica.ts',
        find: "if (typeof stamp === 'number') this.hlc.observe(stamp)",
        replace: "if (typeof stamp === 'number') this.hlc.observe(stamp - 1)",
      },
    ],
    catchers: [{ test: 'test/clocks.test.ts' }],
  },
  {
    name: 'ack-before-store',
    bug: 'writes are acknowledged before their store batch is written',
    edits: [
      {
        // The batch's store write (peers/replica.ts flushBatch before the
        // replica's split, a batch runner after it: the snippet is in both).
        file: 'peers/replica.ts',
        find: 'writeEventChunk(storeOps)\n    try {',
        replace: [
          'writeEventChunk(storeOps)',
          '    batch.forEach((op, i) => {',
          '      if (outcomes[i]?.ok === true) op.resolve(outcomes[i]?.value)',
          '    })',
          '    try {',
        ].join('\n'),
      },
    ],
    catchers: [{ test: 'test/persistence.test.ts', name: 'a storage failure' }],
  },
  {
    name: 'no-fsync',
    bug: 'store writes without `sync: true` (not durable when they resolve)',
    edits: [
      {
        file: 'storage/level-store.ts',
        find: 'const SYNC: SyncWriteOptions = { sync: true }',
        replace: 'const SYNC = { sync: false } as unknown as SyncWriteOptions',
      },
    ],
    catchers: [{ test: 'test/store.test.ts', name: 'synchronous' }],
  },
  {
    name: 'device-specific-replicated',
    bug: "a device's device-specific values are written into its replicated entry",
    edits: [
      {
        file: 'peers/device-ops.ts',
        find: 'const written = writtenFields(mode, replicated, replicatedFieldNames(schema, policies))',
        replace: 'const written = writtenFields(mode, record.fields, schema.fieldNames)',
      },
    ],
    catchers: [{ test: 'test/rules.test.ts', name: 'rule 5' }],
  },
  {
    name: 'full-sync-no-clear',
    bug: "a full sync's wipe clears nothing: the old document and the device's deletes stay",
    edits: [
      {
        file: 'peers/device-sync/full-sync-wipe.ts',
        find: '        deletes: true,\n        staged: true,',
        replace: '        deletes: false,\n        staged: true,',
      },
      {
        // The wipe installs its new, empty document: here it gets the old
        // one's content first when the wipe is a full sync's (staged).
        file: 'peers/replica.ts',
        find: 'installDoc(doc)\n    if (options.holdWrites === true || staged)',
        replace:
          'installDoc((staged && Y.applyUpdate(doc, Y.encodeStateAsUpdate(old)), doc))\n    if (options.holdWrites === true || staged)',
      },
    ],
    catchers: [{ test: 'test/full-sync.test.ts', name: 'rule 3 after a full sync' }],
  },
  {
    name: 'convergence-always-true',
    bug: "the simulator's convergence check always says the site converged",
    edits: [
      {
        file: 'sim/run.ts',
        find: ['  notConvergedReason(): string | undefined {', '    // The cheap tests first'].join(
          '\n',
        ),
        replace: [
          '  notConvergedReason(): string | undefined {',
          '    if (this.site.slots.length > 0) return undefined',
          '    // The cheap tests first',
        ].join('\n'),
      },
    ],
    catchers: [{ sim: ['--seed', '1', ...SMALL_SITE] }, { sim: ['--seed', '3', ...SMALL_SITE] }],
  },
  {
    name: 'no-policy-changed-event',
    bug: 'a field policy change is not logged (`policy-changed`)',
    edits: [
      {
        file: 'server-peer/server-ops.ts',
        find: "ctx.event({ type: 'policy-changed', fields: [field], message: `${field} is now ${policy}` })",
        replace: 'void field',
      },
    ],
    catchers: [{ test: 'test/events.test.ts', name: 'policy-changed' }],
  },
  {
    name: 'no-device-registered-event',
    bug: 'a new device joining is not logged (`device-registered`)',
    edits: [
      {
        file: 'server-peer/sync-server.ts',
        find: "void logEvent(replica, { type: 'device-registered', deviceId })",
        replace: 'void deviceId',
      },
    ],
    catchers: [{ test: 'test/events.test.ts', name: 'device-registered' }],
  },
  {
    name: 'retention-start-1000x',
    bug: 'the retention check at start-up waits 1,000 times the retention period',
    edits: [
      {
        file: 'peers/device-sync.ts',
        find: 'now - persisted.lastUsedAt >= options.retentionMs',
        replace: 'now - persisted.lastUsedAt >= options.retentionMs * 1000',
      },
    ],
    catchers: [{ test: 'test/events.test.ts', name: 'retention check at start-up' }],
  },
  {
    name: 'retention-timer-1000x',
    bug: 'the retention timer of a running device waits 1,000 times the retention period',
    edits: [
      {
        file: 'peers/device-sync.ts',
        find: 'if (clock.now() - this.lastUse() >= retentionMs) void this.retire()',
        replace: 'if (clock.now() - this.lastUse() >= retentionMs * 1000) void this.retire()',
      },
    ],
    catchers: [{ test: 'test/lifecycle.test.ts', name: 'wipes at 10 days unused' }],
  },
  {
    name: 'stale-answer-vector',
    bug: "the server's step 1 in an answer keeps the state vector of before the last transaction",
    edits: [
      {
        file: 'peers/replica/durable-gate.ts',
        find: '    this.vector = undefined\n',
        replace: '\n',
      },
    ],
    catchers: [{ test: 'test/answer-reuse.test.ts', env: { ROSTERSYNC_SEED: '1' } }],
  },
  {
    name: 'stale-delete-set-part',
    bug: "an answer's delete set keeps a client's encoded ranges after a transaction added to them",
    edits: [
      {
        file: 'core/delete-set.ts',
        find: '      this.chunks.delete(client)\n',
        replace: '\n',
      },
    ],
    catchers: [
      { test: 'test/answer-reuse.test.ts', env: { ROSTERSYNC_SEED: '1' } },
      { test: 'test/delete-set.test.ts' },
    ],
  },
  {
    name: 'fill-not-adopted',
    bug: 'the server skips its own transaction after device updates even when it has a fill to adopt (rule 2)',
    edits: [
      {
        file: 'server-peer/create-server.ts',
        find: 'writesAfterRemote: (users, ctx) => adoptsAny(users, ctx),',
        replace: 'writesAfterRemote: () => false,',
      },
    ],
    catchers: [
      { test: 'test/own-transaction.test.ts' },
      { test: 'test/rules.test.ts', name: 'rule 2' },
    ],
  },
  {
    name: 'latin1-any-byte',
    bug: 'the update and value decoder slices every short string as latin1, UTF-8 bytes over 0x7f included',
    edits: [
      {
        file: 'core/any-reader.ts',
        find: 'if (byte >= 0x80) break',
        replace: 'if (byte >= 0x100) break',
      },
    ],
    catchers: [{ test: 'test/apply-update.test.ts', env: { ROSTERSYNC_SEED: '1' } }],
  },
  {
    name: 'shared-string-unchecked',
    bug: "a large update's decoder takes the string last made in a slot for any string of its length, without comparing the bytes",
    edits: [
      {
        file: 'core/any-reader.ts',
        find: 'while (j < length && earlier.charCodeAt(j) === arr[start + j]) j++',
        replace: 'j = length',
      },
    ],
    catchers: [{ test: 'test/apply-update.test.ts', env: { ROSTERSYNC_SEED: '1' } }],
  },
]
