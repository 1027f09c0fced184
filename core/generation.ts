/**
 * A generation's base (issue 13, history compaction): the live state of a
 * site's document as a fresh Yjs update, with none of its history.
 *
 * Yjs keeps an item for every overwrite and a state-vector entry for every
 * clientID that ever wrote, and nothing ever takes them away. A new
 * generation starts from this update instead: every rostersync root of the
 * old document (the server's users, its field policies and revocations, and
 * each device's part) with only the entries a view can still read, each
 * written once, under one clientID per root. Pure: the caller gives the
 * clientIDs (the server derives them from its key) and the writers to leave
 * out (revoked devices, whose parts no view reads).
 *
 * What a view reads is kept exactly, so every rule holds across the change:
 * server entries verbatim, tombstones included (their epoch is what voids
 * older device entries, rule 4; their stamp is what a device's local delete
 * names, rule 3); policies with their stamps (rule 5); every device entry
 * whose epoch is at least the server's for that user. A device entry with a
 * smaller epoch is void everywhere (rule 4) and is dropped.
 */
import * as Y from 'yjs'
import { newDoc } from './new-doc.js'
import {
  asDeviceEntry,
  asServerEntry,
  REVOCATIONS_ROOT,
  rootOwner,
  SERVER_META_ROOT,
  usersRootName,
} from './entries.js'
import { SERVER_ID, type WriterId } from './ids.js'

/** How to build a generation's base. */
export interface GenerationOptions {
  /**
   * The clientID the base writes `root` under: one per root, all distinct,
   * none used in the old document (a receiver ties each clientID to the
   * one writer whose part it writes).
   */
  readonly clientIdFor: (root: string) => number
  /** Writers whose parts are left out (revoked devices). */
  readonly dropWriters?: ReadonlySet<WriterId>
}

/** What a base holds and what it left out. */
export interface GenerationStats {
  /** Roots written. */
  readonly roots: number
  /** Entries written, all roots together. */
  readonly entries: number
  /** Device entries dropped as void (rule 4). */
  readonly voidEntries: number
  /** Device parts dropped whole (`dropWriters`). */
  readonly droppedParts: number
  /** clientIDs of the old document's state vector, and of the base's. */
  readonly clientIdsBefore: number
  readonly clientIdsAfter: number
}

/** A generation's base: one Yjs update, and what it holds. */
export interface GenerationBase {
  readonly update: Uint8Array
  readonly stats: GenerationStats
}

/** The root names rostersync writes, in a fixed order (the server's first). */
function rostersyncRoots(doc: Y.Doc): string[] {
  const server = [usersRootName(SERVER_ID), SERVER_META_ROOT, REVOCATIONS_ROOT]
  const devices = [...doc.share.keys()]
    .filter((name) => !server.includes(name) && rootOwner(name) !== undefined)
    .sort()
  return [...server.filter((name) => doc.share.has(name)), ...devices]
}

/** The live state of `doc` as a fresh update, one clientID per root. */
export function generationBase(doc: Y.Doc, options: GenerationOptions): GenerationBase {
  const base = newDoc()
  const steps = writeBase(doc, base, options, Infinity)
  let step = steps.next()
  while (step.done !== true) step = steps.next()
  const update = Y.encodeStateAsUpdate(base)
  base.destroy()
  return { update, stats: step.value }
}

/** A generation's base built in chunks: the document itself, and its state as updates. */
export interface ChunkedGenerationBase {
  /** The base as a live document (nothing else holds it). */
  readonly doc: Y.Doc
  /**
   * The base's whole state as updates, one per chunk, to apply in order
   * (the first is a snapshot of its own; together they are the base).
   */
  readonly updates: readonly Uint8Array[]
  readonly stats: GenerationStats
}

/**
 * `generationBase` in chunks of at most `chunkEntries` entries read and
 * written, awaiting `pause()` between them (the server yields to its event
 * loop there: reads and syncs are answered while a large base is built).
 * The caller keeps `doc` unchanged until it resolves. The document it
 * gives holds the same items, under the same clientIDs and clocks, as
 * `generationBase`'s update.
 */
export async function buildGenerationBase(
  doc: Y.Doc,
  options: GenerationOptions,
  chunkEntries: number,
  pause: () => Promise<void>,
): Promise<ChunkedGenerationBase> {
  const base = newDoc()
  const updates: Uint8Array[] = []
  const onUpdate = (update: Uint8Array): void => {
    updates.push(update)
  }
  base.on('update', onUpdate)
  try {
    const steps = writeBase(doc, base, options, Math.max(1, chunkEntries))
    for (;;) {
      const step = steps.next()
      if (step.done === true) return { doc: base, updates, stats: step.value }
      await pause()
    }
  } catch (error) {
    base.destroy()
    throw error
  } finally {
    base.off('update', onUpdate)
  }
}

/**
 * Writes the live state of `doc` into `base` (empty), one clientID per
 * root; yields after every `chunkEntries` entries read or written (a
 * transaction never spans a yield), and returns what it wrote.
 */
function* writeBase(
  doc: Y.Doc,
  base: Y.Doc,
  options: GenerationOptions,
  chunkEntries: number,
): Generator<void, GenerationStats, void> {
  const serverUsers = doc.share.has(usersRootName(SERVER_ID))
    ? doc.getMap<unknown>(usersRootName(SERVER_ID))
    : undefined
  const epochOf = (user: string): number => asServerEntry(serverUsers?.get(user))?.e ?? 0
  // One document, each root written under its own clientID (Yjs takes the
  // document's clientID per item): no per-root update to merge afterwards,
  // which cost as much again as the writes.
  const clientIds = new Set<number>()
  let entries = 0
  let voidEntries = 0
  let droppedParts = 0
  let roots = 0
  let budget = chunkEntries
  for (const root of rostersyncRoots(doc)) {
    const owner = rootOwner(root)
    if (owner === undefined) continue
    if (owner !== SERVER_ID && options.dropWriters?.has(owner) === true) {
      droppedParts++
      continue
    }
    const kept: Array<readonly [string, unknown]> = []
    const isDevicePart = owner !== SERVER_ID
    for (const [key, value] of doc.getMap<unknown>(root).entries()) {
      if (--budget <= 0) {
        yield
        budget = chunkEntries
      }
      if (isDevicePart) {
        const entry = asDeviceEntry(value)
        if (entry === undefined || entry.e < epochOf(key)) {
          voidEntries++
          continue
        }
      }
      kept.push([key, value])
    }
    if (kept.length === 0) continue
    kept.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    const clientId = options.clientIdFor(root)
    if (clientIds.has(clientId)) throw new Error(`clientID ${clientId} given for two roots`)
    clientIds.add(clientId)
    const map = base.getMap<unknown>(root)
    for (let from = 0; from < kept.length;) {
      const to = Math.min(kept.length, from + Math.max(1, budget))
      base.clientID = clientId
      base.transact(() => {
        for (let i = from; i < to; i++) {
          const [key, value] = kept[i] as readonly [string, unknown]
          map.set(key, value)
        }
      })
      budget -= to - from
      from = to
      if (budget <= 0) {
        yield
        budget = chunkEntries
      }
    }
    entries += kept.length
    roots++
  }
  return {
    roots,
    entries,
    voidEntries,
    droppedParts,
    clientIdsBefore: Y.decodeStateVector(Y.encodeStateVector(doc)).size,
    clientIdsAfter: clientIds.size,
  }
}
