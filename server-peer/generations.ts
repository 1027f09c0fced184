/**
 * The server's generations (issue 13, history compaction): `compactHistory`
 * starts a new generation of the site's document, holding only the live
 * state (core/generation.ts), and the server states which generation it is
 * on in every hello (a signed statement, core/generation-statement.ts).
 *
 * One switch: the base is built from the document as it stands after every
 * queued write, the document and the stored one are replaced in one atomic
 * batch with the generation record (`r/site/generation`) and the event
 * `history-compacted` (peers/replica/generation-switch.ts), then every
 * device link is closed with 4412 `GENERATION_CHANGED` before any other
 * batch runs: nothing of the old generation reaches the new one, and each
 * device comes back (after its spread delay) and moves with one full sync.
 *
 * The base: the server's roots verbatim (tombstones and stamps kept: rule 3
 * marks and rule 4 epochs stay valid), live device parts under clientIDs
 * derived from the server's key, the generation and the root (one writer
 * per clientID holds), revoked devices' parts and void entries dropped.
 *
 * Automatic: every `limits.generationCheckIntervalMs` (injected clock),
 * when the state vector names more than `generationClientIdsMax` clientIDs
 * or history outweighs the live items `generationHistoryRatioMax` times,
 * and the last generation is at least `generationAutoSpacingMs` old.
 */
import * as Y from 'yjs'
import type { Clock } from '../core/clock.js'
import { rootOwner } from '../core/entries.js'
import {
  buildGenerationBase,
  type ChunkedGenerationBase,
  type GenerationStats,
} from '../core/generation.js'
import { HistoryCount } from '../core/history-count.js'
import {
  baseClientId,
  encodeGenerationStatement,
  FIRST_GENERATION,
  GENERATION_ID_BYTES,
  signGeneration,
  type Generation,
} from '../core/generation-statement.js'
import { SERVER_ID, type WriterId } from '../core/ids.js'
import { limits } from '../core/limits.js'
import type { Identity } from '../peers/identity.js'
import { siteOf } from '../peers/identity.js'
import type { Replica } from '../peers/replica.js'
import { mergeUpdates } from './merge-updates.js'
import { holdProcess } from '../peers/system-clock.js'

/** Where the generation is kept (a peer-local record, never replicated). */
export const GENERATION_RECORD = ['site', 'generation'] as const

/** The stored generation record. */
interface StoredGeneration extends Generation {
  readonly at: number
  /** The signed statement (base64), as devices get it in the hello. */
  readonly statement: string
}

/** What one `compactHistory` did (API: `server.compactHistory()`). */
export interface CompactionResult {
  /** The generation the site is on now. */
  readonly generation: number
  readonly id: string
  /** clientIDs of the state vector before and after. */
  readonly clientIdsBefore: number
  readonly clientIdsAfter: number
  /** Bytes of the stored document before (snapshot and log) and after. */
  readonly bytesBefore: number
  readonly bytesAfter: number
  /** Entries the base holds, and device entries dropped as void (rule 4). */
  readonly entries: number
  readonly voidEntries: number
  /** Device links closed (they come back and move). */
  readonly devicesClosed: number
}

/** The server's generation, its statement, and the switch. */
export class Generations {
  private timer: unknown = undefined
  private running: Promise<CompactionResult> | undefined
  private stopped = false
  /** The document's history, followed as it changes (the automatic check). */
  private readonly history = new HistoryCount()

  constructor(
    private readonly options: {
      readonly replica: Replica
      readonly identity: Identity
      readonly clock: Clock
      /**
       * Whether a compaction holds the process alive while it runs (the
       * system clock's: see compactHistory); not on an injected clock (a
       * simulation's crash abandons the compaction, and its hold kept a
       * finished `rostersync sim` running for ever, a probe).
       */
      readonly holdsProcess?: boolean
      /** The peer's random source (injected: a simulation replays the same ids). */
      readonly randomUint32: () => number
      /** Closes every device link with 4412; returns how many it closed. */
      readonly closeLinks: (reason: string) => number
      /**
       * Gives the old generation's space back in the background
       * (Store.reclaim), once the switch is durable.
       */
      readonly reclaim?: () => void
      /** The most clientIDs one device writes under (peers/writer-clients.ts). */
      readonly mostClientsOfOneWriter?: () => number
    },
  ) {}

  /** The generation the site is on (n 0, id '' before the first compaction). */
  current(): Generation {
    const stored = this.stored()
    return stored === undefined ? FIRST_GENERATION : { n: stored.n, id: stored.id }
  }

  /** The generation and when it started; undefined before the first compaction. */
  started(): (Generation & { readonly at: number }) | undefined {
    const stored = this.stored()
    return stored === undefined ? undefined : { n: stored.n, id: stored.id, at: stored.at }
  }

  /** The signed statement for the hello; undefined before the first compaction. */
  statement(): Uint8Array | undefined {
    const stored = this.stored()
    return stored === undefined ? undefined : Buffer.from(stored.statement, 'base64')
  }

  private stored(): StoredGeneration | undefined {
    return this.options.replica.record(...GENERATION_RECORD) as StoredGeneration | undefined
  }

  /**
   * Starts a new generation now (API.md `server.compactHistory()`); one at
   * a time (a call while one runs gets that one's result).
   */
  compactHistory(): Promise<CompactionResult> {
    if (this.running === undefined) {
      // The build yields on the clock's timers, which keep no process
      // alive (a pending delta sync must not): a process that only
      // compacts (`rostersync compact` on a stopped server) exited in the
      // middle, silently, status 0 (a probe). Held alive while it runs.
      const release = this.options.holdsProcess === true ? holdProcess() : () => undefined
      this.running = this.run().finally(() => {
        release()
        this.running = undefined
      })
    }
    return this.running
  }

  private async run(): Promise<CompactionResult> {
    const { replica, identity, clock } = this.options
    const previous = this.current()
    const id = randomId(this.options.randomUint32)
    const n = previous.n + 1
    const at = clock.now()
    const statement = signGeneration(identity.key, { site: siteOf(identity.publicKey), n, id, at })
    const record: StoredGeneration = {
      n,
      id,
      at,
      statement: Buffer.from(encodeGenerationStatement(statement)).toString('base64'),
    }
    const bytesBefore = replica.storedDocumentBytes()
    let devicesClosed = 0
    // The queue is held from here to the switch: the document does not
    // change while its base is built in chunks, a turn of the event loop
    // between two (reads and syncs are answered meanwhile; writes wait and
    // land in the new generation), nor while the chunks are merged into
    // the snapshot off the loop.
    const release = await replica.holdForSwitch()
    let base: ChunkedGenerationBase | undefined
    let installed = false
    let stats: GenerationStats
    try {
      const old = replica.doc
      base = await buildGenerationBase(
        old,
        {
          clientIdFor: (root) => baseClientId(identity.publicKey, id, root),
          dropWriters: revokedWriters(old, replica),
        },
        limits.generationBuildChunkEntries,
        () => nextTurn(this.options.clock),
      )
      const built = base
      const snapshot =
        built.updates.length === 0
          ? Y.encodeStateAsUpdate(built.doc)
          : await mergeUpdates(built.updates)
      const s = built.stats
      // The base's clientIDs and the server's fresh one, under which it
      // writes from the switch on: the figure the result reports too.
      const after = s.clientIdsAfter + 1
      stats = await replica.switchGeneration(
        (doc) => {
          if (doc !== old) throw new Error('the document changed while its base was built')
          return {
            snapshot,
            doc: built.doc,
            records: [[...GENERATION_RECORD, record]],
            event: {
              type: 'history-compacted',
              message: `generation ${n}: ${s.clientIdsBefore} clientIDs before, ${after} after; ${s.entries} entries kept, ${s.voidEntries} void dropped, ${s.droppedParts} revoked parts dropped`,
            },
            result: s,
          }
        },
        () => {
          installed = true
          // Synchronously, before any other batch: no link of the old
          // generation sends or takes anything more.
          devicesClosed = this.options.closeLinks(`GENERATION_CHANGED: generation ${n}`)
        },
      )
    } catch (error) {
      if (!installed && base?.doc.isDestroyed === false) base.doc.destroy()
      throw error
    } finally {
      release()
    }
    // The old history is deleted, not yet gone from the disk: the store
    // compacts it away now rather than at the next open (bench/README, "aging").
    this.options.reclaim?.()
    return {
      generation: n,
      id,
      clientIdsBefore: stats.clientIdsBefore,
      clientIdsAfter: stats.clientIdsAfter + 1,
      bytesBefore,
      bytesAfter: replica.storedDocumentBytes(),
      entries: stats.entries,
      voidEntries: stats.voidEntries,
      devicesClosed,
    }
  }

  /**
   * Whether the document is due for a new generation (see limits). Cheap:
   * the history is counted once per document and then followed
   * transaction by transaction (core/history-count.ts), not scanned.
   */
  due(): boolean {
    const doc = this.options.replica.doc
    if (doc.store.clients.size > limits.generationClientIdsMax) return true
    // A device near its own bound (a small site whose terminals crash
    // nightly, or a y-websocket page loaded hundreds of times).
    const most = this.options.mostClientsOfOneWriter?.() ?? 0
    if (most >= limits.writerClientIdsMax * 0.9) return true
    const { deleted, live } = this.history.of(doc)
    return (
      deleted >= limits.generationDeletedItemsMin &&
      deleted > live * limits.generationHistoryRatioMax
    )
  }

  /** Looks every `generationCheckIntervalMs` whether a generation is due, and starts it. */
  start(): void {
    if (this.stopped) return
    const { clock } = this.options
    this.timer = clock.setTimeout(() => {
      this.timer = undefined
      if (this.stopped) return
      const next = (): void => this.start()
      const last = this.started()?.at
      const early = last !== undefined && clock.now() - last < limits.generationAutoSpacingMs
      if (early || !this.due()) {
        next()
        return
      }
      this.compactHistory().then(next, next)
    }, limits.generationCheckIntervalMs)
  }

  /** Stops the automatic check; resolves once a running switch is done. */
  async stop(): Promise<void> {
    this.stopped = true
    this.options.clock.clearTimeout(this.timer)
    this.timer = undefined
    await this.running?.catch(() => undefined)
    this.history.detach()
  }
}

/**
 * Resolves on a later turn of the event loop (after pending I/O callbacks):
 * a timer of 0 ms on the injected clock, so that the simulator runs it as
 * an event of its own at the same virtual time (a `setImmediate` there
 * waited for the scheduler's next real turn, a thousand events later, with
 * the write queue held meanwhile: a review).
 */
function nextTurn(clock: Clock): Promise<void> {
  return new Promise((resolve) => clock.setTimeout(resolve, 0))
}

/** The writers whose parts the document holds and the server revoked. */
function revokedWriters(doc: Y.Doc, replica: Replica): Set<WriterId> {
  const revoked = new Set<WriterId>()
  for (const root of doc.share.keys()) {
    const owner = rootOwner(root)
    if (owner !== undefined && owner !== SERVER_ID && replica.isRevoked(owner)) revoked.add(owner)
  }
  return revoked
}

/** A generation id: GENERATION_ID_BYTES random bytes, hex. */
function randomId(randomUint32: () => number): string {
  const bytes = Buffer.alloc(Math.ceil(GENERATION_ID_BYTES / 4) * 4)
  for (let i = 0; i < bytes.length; i += 4) bytes.writeUInt32BE(randomUint32() >>> 0, i)
  return bytes.subarray(0, GENERATION_ID_BYTES).toString('hex')
}
