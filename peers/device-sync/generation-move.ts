/**
 * A device's move to its server's generation (issue 13, history
 * compaction). The device keeps the generation it is on in a peer-local
 * record (`sync/generation`); the server states its own in every hello
 * (signed, checked with the pinned key before this runs). When they differ
 * (a new generation, or a server restored to an older one), the device
 * moves with one full sync that is not rule 3's:
 * - it pushes nothing of the old generation (its items build on history
 *   the new one dropped); its own part's entries are carried instead;
 * - the document is replaced in memory (a staged wipe with `generation`):
 *   its own writes wait, nothing received is stored, the delete marks
 *   (rule 3) and device-specific values stay (the server's entries and
 *   stamps, which the marks name, are copied verbatim into the new
 *   generation);
 * - once the fetch is complete, one store batch holds the new document
 *   with the carried own entries merged into it (the latest stamp per
 *   field, `mergeDeviceEntries`; entries void by rule 4 are not carried),
 *   the generation record and the sync record; the carried entries then go
 *   to the server as any own write.
 * A crash before that batch restarts the device on its old generation,
 * whole (it moves again); after it, on the new one. A device holding
 * nothing notes the generation: its first fetch is the new one.
 *
 * Invariants: `staged` is set exactly while this device's replica holds a
 * staged generation wipe started here; `ensure`, `abandon` and `commit` run
 * one at a time, in call order (`chain`): the hello and the round both call
 * `ensure`, and a second staged wipe would wait for ever behind the first's
 * hold of own writes (only the round that waits for it could end that hold).
 */
import * as Y from 'yjs'
import { rootOwner, usersRootName, type DeviceEntry } from '../../core/entries.js'
import { recordBytes, type FieldValue } from '../../core/schema.js'
import { limits } from '../../core/limits.js'
import type { HlcStamp } from '../../core/hlc.js'
import {
  decodeGenerationStatement,
  encodeGenerationStatement,
  FIRST_GENERATION,
  sameGeneration,
  type Generation,
  type GenerationStatement,
} from '../../core/generation-statement.js'
import { asUserId, asWriterId, SERVER_ID, type UserId } from '../../core/ids.js'
import { CloseCode } from '../../core/protocol.js'
import type { NewEvent } from '../../core/events.js'
import type { Connection } from '../../core/transport.js'
import { mergeDeviceEntries } from '../../core/writes.js'
import type { HeldBeforeRefetch, Replica } from '../replica.js'
import { heldWhenLeft, leftRecord, type LeftGeneration } from './left-generations.js'
import { heldBeforeRefetch } from './mark-versions.js'
import { carry, ownEntries, partEntries } from './own-entries.js'

export const DEVICE_GENERATION_RECORD = ['sync', 'generation'] as const // the generation it is on

/** The stored record: the generation and the server's statement of it (base64). */
interface StoredGeneration extends Generation {
  readonly statement?: string
}

/** The generation a device is on (its record; n 0 when it never moved). */
export function deviceGeneration(replica: Replica): Generation {
  const stored = replica.record(...DEVICE_GENERATION_RECORD) as StoredGeneration | undefined
  return stored === undefined ? FIRST_GENERATION : { n: stored.n, id: stored.id }
}

/** The server's statement of the generation a device is on (it shows it to LAN peers). */
export function deviceGenerationStatement(replica: Replica): Uint8Array | undefined {
  const stored = replica.record(...DEVICE_GENERATION_RECORD) as StoredGeneration | undefined
  return stored?.statement === undefined ? undefined : Buffer.from(stored.statement, 'base64')
}

/** Each device's move, by its replica (see documentGeneration). */
const moves = new WeakMap<Replica, GenerationMove>()

/**
 * The generation of the document `replica` holds in memory: a staged
 * move's (its fetch fills the emptied document), else the one it is on.
 * Its envelopes are signed and checked for it (core/signing.ts).
 */
export function documentGeneration(replica: Replica): Generation {
  return moves.get(replica)?.documentGeneration() ?? deviceGeneration(replica)
}

/** Who listens to each replica's generation changing (see onGenerationNoted). */
const notedListeners = new WeakMap<Replica, Set<() => void>>()

/**
 * Listens to this device noting another generation in its record (a move
 * committed, or a device that held nothing noting its server's); returns
 * the unsubscribe function. Its LAN links admitted on the generation it
 * left close (peers/lan-auth.ts).
 */
export function onGenerationNoted(replica: Replica, listener: () => void): () => void {
  const listeners = notedListeners.get(replica) ?? new Set()
  notedListeners.set(replica, listeners)
  listeners.add(listener)
  return () => listeners.delete(listener)
}

/** Tells the listeners of `replica`'s generation that it changed (once durable). */
function tellNoted(replica: Replica): void {
  for (const listener of [...(notedListeners.get(replica) ?? [])]) listener()
}

/** The record of a generation the server stated. */
function recordOf(generation: Generation | GenerationStatement): StoredGeneration {
  if (!('signature' in generation)) return { n: generation.n, id: generation.id }
  const statement = Buffer.from(encodeGenerationStatement(generation)).toString('base64')
  return { n: generation.n, id: generation.id, statement }
}

/** A staged move: the generation it goes to and the own entries it carries. */
export interface StagedMove {
  readonly to: Generation | GenerationStatement
  readonly carried: ReadonlyMap<UserId, DeviceEntry>
  /** Other devices' entries this device held (relayed over the LAN), by writer. */
  readonly relayed: ReadonlyMap<string, ReadonlyMap<UserId, DeviceEntry>>
  /** What the device's delete marks hid before the fetch (WipeEnd.restored). */
  readonly restored?: HeldBeforeRefetch
  /** The note of the generation it leaves (a move's: ./left-generations.ts). */
  readonly left?: readonly [string, string, LeftGeneration[]]
}

/** One device's generation and its move. */
export class GenerationMove {
  /** A move staged: the generation it goes to and the own entries it carries. */
  private staged: StagedMove | undefined
  /** The generation the server stated last (its latest hello). */
  private learned: Generation | GenerationStatement | undefined
  /** The last of the calls that change `staged`, settled or not. */
  private chain: Promise<unknown> = Promise.resolve()
  /** The server link whose hello called for the staged move (learnOn). */
  private stagedOn: Connection | undefined
  /**
   * Users whose entries of other devices, which the new generation lacked,
   * the last committed move carried as this device's own (see unseenRelayed).
   */
  relayedCarried = 0

  constructor(
    private readonly replica: Replica,
    /** The key that signed each relayed client (DeviceSyncOptions.clientKeys). */
    private readonly clientKeys: () => ReadonlyMap<number, string> = () => new Map(),
  ) {
    moves.set(replica, this)
  }

  /** The generation of the document in memory (see the function of that name). */
  documentGeneration(): Generation {
    return this.staged?.to ?? this.current()
  }

  /** The generation this device is on (its record; n 0 when it never moved). */
  current(): Generation {
    return deviceGeneration(this.replica)
  }

  /** Whether a move is staged (the next sync completes it). */
  get pending(): boolean {
    return this.staged !== undefined
  }

  /** The generation a staged move goes to. */
  get target(): Generation | undefined {
    return this.staged?.to
  }

  /**
   * The server's hello named its generation (`undefined`: its site's
   * first). Resolves once a move it calls for is staged (the session goes
   * on with the emptied document) or the generation is noted; true when a
   * move is pending.
   */
  async learn(generation: GenerationStatement | undefined): Promise<boolean> {
    this.learned = generation ?? FIRST_GENERATION
    return this.ensure()
  }

  /**
   * `learn` for a server link: a move that cannot start closes the link
   * (4412; it comes back and tries again), since going on over it on the
   * old generation would mix the two.
   */
  async learnOn(
    generation: GenerationStatement | undefined,
    connection: Connection,
  ): Promise<boolean> {
    try {
      const pending = await this.learn(generation)
      if (pending) this.stagedOn = connection
      return pending
    } catch (error) {
      const reason = `GENERATION_CHANGED: the move could not start: ${(error as Error).message}`
      connection.close(CloseCode.generationChanged, reason.slice(0, 120))
      throw error
    }
  }

  /**
   * Stages the move the server's last statement calls for, unless one is
   * staged or none is needed; true when a move is pending.
   */
  ensure(): Promise<boolean> {
    return this.serial(() => this.ensureNow())
  }

  private async ensureNow(): Promise<boolean> {
    const to = this.learned
    if (to === undefined) return this.pending
    if (this.staged !== undefined) {
      if (sameGeneration(this.staged.to, to)) return true
      // The server changed again meanwhile: start over from the stored state.
      await this.abandonNow()
    }
    if (sameGeneration(this.current(), to)) return false
    const { replica } = this
    if (holdsNothing(replica.doc)) {
      // Nothing to carry: what it fetches is the new generation. No document
      // is replaced, so its LAN links hear of it here (they close, and the
      // relay log of the generation it left is cleared: peers/signed-link.ts).
      await replica.setRecord(...DEVICE_GENERATION_RECORD, recordOf(to))
      tellNoted(replica)
      return false
    }
    const carried = ownEntries(replica.doc, replica)
    const relayed = relayedEntries(replica.doc, replica, this.clientKeys())
    // Back to an older generation: its server restored from a backup
    // taken before a compaction (./left-generations.ts).
    const seen = heldWhenLeft(replica, to)
    const back = seen !== undefined || to.n < this.current().n
    const restored = back
      ? { ...heldBeforeRefetch(replica), seen: seen ?? new Map<number, number>() }
      : { ...heldBeforeRefetch(replica, false), forward: true }
    const left = leftRecord(replica, this.current(), replica.doc)
    await replica.wipe({ local: false, staged: true, generation: true })
    this.staged = { to, carried, relayed, left, restored }
    return true
  }

  /**
   * Stages a move to the generation this device is on (unless a move is
   * staged): its server lost operations of its own that this device holds
   * (a data directory restored from a backup: ServerExchange.serverLost).
   * The next round fetches the server's document whole and carries this
   * device's own entries over it, as a move does; the delete marks stay
   * (PROTOCOL.md, "A restored server").
   */
  refetch(): Promise<void> {
    return this.serial(async () => {
      if (this.staged !== undefined) return
      const { replica } = this
      // The same generation, its statement kept (the device shows it to LAN peers).
      const statement = deviceGenerationStatement(replica)
      const to = statement === undefined ? this.current() : decodeGenerationStatement(statement)
      const carried = ownEntries(replica.doc, replica)
      const relayed = relayedEntries(replica.doc, replica, this.clientKeys())
      const restored = heldBeforeRefetch(replica)
      await replica.wipe({ local: false, staged: true, generation: true })
      this.staged = { to, carried, relayed, restored }
    })
  }

  /**
   * Ends the move once the fetch is complete: the carried own entries,
   * `records` and `event`'s event go into the one batch that stores the
   * new generation; with `deletes` (the move completes a full sync the
   * caller asked for) the delete marks are cleared too (rule 3).
   */
  commit(
    records: ReadonlyArray<readonly [string, string, unknown]>,
    deletes = false,
    fetchedFor?: StagedMove,
    event?: (to: Generation, relayedCarried: number) => NewEvent,
  ): Promise<Generation> {
    return this.serial(() => this.commitNow(records, deletes, fetchedFor, event))
  }

  /**
   * The move staged now: a round hands it back to `commit`, which refuses
   * when the move was abandoned and staged again during the round's fetch
   * (a hello naming a third generation): that document was never fetched.
   */
  get stagedMove(): StagedMove | undefined {
    return this.staged
  }

  private async commitNow(
    records: ReadonlyArray<readonly [string, string, unknown]>,
    deletes: boolean,
    fetchedFor: StagedMove | undefined,
    event: ((to: Generation, relayedCarried: number) => NewEvent) | undefined,
  ): Promise<Generation> {
    const staged = this.staged
    if (staged === undefined) throw new Error('no generation move is staged')
    if (fetchedFor !== undefined && fetchedFor !== staged)
      throw new Error('the move was staged again during its fetch: it starts over')
    const { replica } = this
    let relayedCarried = 0
    await replica.commitWipe(
      [
        ...records,
        [...DEVICE_GENERATION_RECORD, recordOf(staged.to)],
        ...(staged.left ? [staged.left] : []),
      ],
      (ctx) => {
        const { entries, relayed } = withUnseen(
          staged.carried,
          unseenRelayed(replica, staged.relayed),
        )
        relayedCarried = relayed
        carry(ctx, replica, entries)
        // In the same batch: a crash after the move cannot lose its event.
        if (event !== undefined) ctx.event(event(staged.to, relayed))
      },
      { deletes, ...(staged.restored && { restored: staged.restored }) },
    )
    this.relayedCarried = relayedCarried
    this.staged = undefined
    this.stagedOn = undefined
    tellNoted(replica)
    return staged.to
  }

  /**
   * Undoes a staged move (the stored state, the old generation, is loaded
   * again) after its round failed. The server link whose hello called for
   * it is closed (4412) when still open: it would go on sending the new
   * generation's updates into the old generation's document. The device
   * comes back after its spread delay and the hello stages the move again.
   */
  abandon(): Promise<void> {
    return this.serial(async () => {
      const undone = this.staged !== undefined
      const link = this.stagedOn
      await this.abandonNow()
      if (undone && link?.open === true)
        link.close(CloseCode.generationChanged, 'GENERATION_CHANGED: the move was undone')
    })
  }

  private async abandonNow(): Promise<void> {
    if (this.staged === undefined) return
    // The staged document is in memory until the stored one is loaded
    // again: until then its envelopes are the staged generation's
    // (documentGeneration).
    try {
      await this.replica.abandonWipe()
    } finally {
      this.staged = undefined
      this.stagedOn = undefined
    }
  }

  /** Runs `step` once every earlier call that changes `staged` has settled. */
  private serial<T>(step: () => Promise<T>): Promise<T> {
    const run = this.chain.then(step)
    this.chain = run.catch(() => undefined)
    return run
  }
}

/**
 * Whether `doc` holds nothing of any generation: no struct integrated and
 * none waiting in Yjs for earlier ones. A device that only ever heard LAN
 * relays building on items it never got holds no client but keeps those
 * updates pending (and logged for relay): noting the new generation over
 * them would leave them in the new document, waiting for ever on history
 * it dropped, and offered to its peers. It moves instead (its staged wipe
 * drops them).
 */
export function holdsNothing(doc: Y.Doc): boolean {
  const { store } = doc
  return store.clients.size === 0 && store.pendingStructs === null && store.pendingDs === null
}

/**
 * The entries of other devices' parts in `doc` (not the server's; the
 * server's roots other than its users' have no other owner): what this
 * device holds of them may have come over the LAN only, from a device
 * still on the old generation. Revoked writers, and entries a revoked key
 * signed, are left at the commit (unseenRelayed), against the new
 * generation.
 */
function relayedEntries(
  doc: Y.Doc,
  replica: Replica,
  keys: ReadonlyMap<number, string>,
): Map<string, ReadonlyMap<UserId, DeviceEntry>> {
  const out = new Map<string, ReadonlyMap<UserId, DeviceEntry>>()
  for (const name of doc.share.keys()) {
    const writer = rootOwner(name)
    if (writer === undefined || writer === SERVER_ID || writer === replica.writerId) continue
    const entries = partEntries(doc, name)
    for (const [key, item] of doc.getMap(name)._map) {
      const entry = entries.get(asUserId(key))
      const signer = keys.get(item.id.client)
      if (entry !== undefined && signer !== undefined) signedBy.set(entry, signer)
    }
    if (entries.size > 0) out.set(writer, entries)
  }
  return out
}

/**
 * The key (its revocation id) that signed each relayed entry's item, read
 * off the relay log at staging (relayedEntries; the staged wipe clears the
 * log), judged at the commit (unseenRelayed), in the new generation.
 */
const signedBy = new WeakMap<DeviceEntry, string>()

/**
 * What of other devices' entries the new generation (the fetched document)
 * lacks, per user, merged: fields whose stamp its copy of that device's
 * part holds older or not at all. The server built the generation from
 * what it held; a field it lacks it never received: the device wrote it
 * while cut off from the server, and this device got it over the LAN. It
 * is carried as this device's own fill (the writer cannot sign into the
 * new generation before it comes back itself, and may never), so that no
 * write acknowledged on the old generation is lost (issue 13). Fields now
 * device-specific, and entries void by rule 4, are left.
 */
function unseenRelayed(
  replica: Replica,
  relayed: ReadonlyMap<string, ReadonlyMap<UserId, DeviceEntry>>,
): Map<UserId, DeviceEntry> {
  const policies = replica.policies()
  const out = new Map<UserId, DeviceEntry>()
  for (const [writer, entries] of relayed) {
    // Checked again in the new generation, whose revocations this device
    // may learn only now: a device revoked meanwhile had its part dropped,
    // and its writes, carried, would come back as this device's own (a
    // probe laundered a revoked device's writes this way).
    if (replica.isRevoked(writer)) continue
    const part = partEntries(replica.doc, usersRootName(asWriterId(writer)))
    for (const [id, entry] of entries) {
      // Nor what a key revoked since signed (a thief's, after a key reset):
      // the server adopted it as this device's fill (a hostile probe).
      const signer = signedBy.get(entry)
      if (signer !== undefined && replica.isRevoked(signer)) continue
      if (entry.e < (replica.replicaOf(id).server?.e ?? 0)) continue
      const held = part.get(id)
      if (held !== undefined && held.e > entry.e) continue
      const f: Record<string, FieldValue> = {}
      const s: Record<string, HlcStamp> = {}
      for (const [field, stamp] of Object.entries(entry.s)) {
        if (policies.get(field)?.p === 'device-specific') continue
        if (held !== undefined && held.e === entry.e && (held.s[field] ?? -1) >= stamp) continue
        s[field] = stamp
        const value = entry.f[field]
        if (value !== undefined) f[field] = value
      }
      if (Object.keys(s).length === 0) continue
      const unseen: DeviceEntry = { e: entry.e, f, s }
      const other = out.get(id)
      out.set(id, other === undefined ? unseen : mergeDeviceEntries([other, unseen]))
    }
  }
  return out
}

/**
 * The own entries to carry with the unseen relayed ones merged in (the
 * latest stamp per field), and for how many users relayed fields went in.
 */
function withUnseen(
  carried: ReadonlyMap<UserId, DeviceEntry>,
  unseen: ReadonlyMap<UserId, DeviceEntry>,
): { entries: ReadonlyMap<UserId, DeviceEntry>; relayed: number } {
  if (unseen.size === 0) return { entries: carried, relayed: 0 }
  let relayed = 0
  const out = new Map(carried)
  for (const [id, entry] of unseen) {
    const own = out.get(id)
    const merged = own === undefined ? entry : mergeDeviceEntries([own, entry])
    // An entry past the record bound is refused by the server, with every
    // later write of this device: the relayed fields give way (this
    // device's own stay), rather than blocking its pushes for good.
    if (recordBytes(merged.f) > limits.recordBytesMax) continue
    out.set(id, merged)
    relayed++
  }
  return { entries: out, relayed }
}
