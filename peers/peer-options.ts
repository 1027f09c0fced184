/**
 * Options both peers share, parsed once at the boundary, and the pieces
 * both factories need: opening the store, the random source, the schema.
 */
import { randomInt } from 'node:crypto'
import { z } from 'zod'
import type { Clock } from '../core/clock.js'
import { InvalidOptionsError } from '../core/errors.js'
import { CUSTOM_FIELD_TYPES, RecordSchema, type CustomFieldType } from '../core/schema.js'
import type { Store } from '../core/store.js'
import { openLevelStore } from '../storage/level-store.js'
import { systemClock, withLongTimers } from './system-clock.js'

/** Options every peer accepts besides its own. */
export interface CommonPeerOptions {
  /** Directory of the peer's LevelDB database. */
  readonly dataDir?: string
  /** A store to use instead of LevelDB in `dataDir` (tests, simulator). */
  readonly store?: Store
  /** Injectable clock (tests, simulator); the system clock by default. */
  readonly clock?: Clock
  /** Injectable random source: a uniform unsigned 32-bit integer (simulator). */
  readonly randomUint32?: () => number
  /** The site's custom fields and their kinds (every peer of a site declares the same). */
  readonly customFields?: Readonly<Record<string, CustomFieldType>>
  /** Most events kept in the event log. */
  readonly eventsMax?: number
}

const clockSchema = z.custom<Clock>(
  (v) =>
    typeof v === 'object' &&
    v !== null &&
    ['now', 'setTimeout', 'clearTimeout'].every(
      (k) => typeof (v as Record<string, unknown>)[k] === 'function',
    ),
  'clock must have now(), setTimeout() and clearTimeout()',
)

/** zod shape of {@link CommonPeerOptions}, for the factories to extend. */
export const commonOptionsShape = {
  dataDir: z.string().min(1).optional(),
  store: z
    .custom<Store>((v) => typeof v === 'object' && v !== null, 'store must be a Store')
    .optional(),
  clock: clockSchema.optional(),
  randomUint32: z.custom<() => number>((v) => typeof v === 'function').optional(),
  customFields: z.record(z.string(), z.enum(CUSTOM_FIELD_TYPES)).optional(),
  eventsMax: z.number().int().positive().optional(),
}

/** Parses options with `schema`, turning zod's error into `INVALID_OPTIONS`. */
export function parseOptions<T>(schema: z.ZodType<T>, input: unknown, what: string): T {
  const result = schema.safeParse(input)
  if (!result.success) {
    throw new InvalidOptionsError(`${what}: ${z.prettifyError(result.error)}`, result.error.issues)
  }
  return result.data
}

/** What both factories derive from the common options. */
export interface PeerBasics {
  readonly store: Store
  readonly clock: Clock
  readonly randomUint32: () => number
  /** A uniform number in [0, 1) from the same source (backoff jitter). */
  readonly random: () => number
  readonly schema: RecordSchema
}

/** Opens the store and builds the schema; `dataDir` or `store` is required. */
export async function peerBasics(options: CommonPeerOptions): Promise<PeerBasics> {
  if (options.store === undefined && options.dataDir === undefined) {
    throw new InvalidOptionsError('dataDir is required')
  }
  const schema = new RecordSchema(options.customFields ?? {})
  const store = options.store ?? (await openLevelStore(options.dataDir as string))
  const randomUint32 = options.randomUint32 ?? (() => randomInt(1, 2 ** 32 - 1))
  return {
    store,
    clock: options.clock === undefined ? systemClock : withLongTimers(options.clock),
    randomUint32,
    random: () => randomUint32() / 2 ** 32,
    schema,
  }
}
