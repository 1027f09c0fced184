/**
 * Records the history the oracle (`sim/oracle/`) checks a run against: each
 * write the workload made (as its caller asked for it), the transaction
 * that carried it into its writer's document (one operation id of it, and
 * the state vector the writer held just before it: what the writer had
 * seen), its stamp, whether it was acknowledged; every server transaction
 * that changed a user's server record or brought others' writes; full syncs,
 * retention wipes and restores.
 *
 * It watches each running replica's Yjs document (`afterTransaction`): a
 * transaction that adds operations under the document's own clientID is one
 * of this peer's writes, and the operations the workload called on that peer
 * and still wait for one are matched to it by the user key (or policy
 * field) it changed. The stamps are read from the entry the transaction
 * left, the one place this file reads the implementation's layout; the
 * oracle uses them only to order writes neither of which saw the other.
 *
 * Generations (history compaction) keep the oracle's view of causality
 * whole: a new generation's base is written under fresh clientIDs, and a
 * moving device writes its carried own entries again under a new one. The
 * recorder notes, for each, an alias: whoever holds that operation holds
 * what it stands for (the base: everything the server held when it built
 * it; a carry: the devices' operations the moving device held when it
 * staged its move, its own and its LAN neighbours' it may carry as its own
 * fill). Every state vector the oracle gets is closed under the aliases,
 * so a write on the new generation still "knows" what its writer inherited,
 * and an old write that survived into the new one is still held.
 */
import * as Y from 'yjs'
import {
  asDeviceEntry,
  asPolicyEntry,
  asServerEntry,
  SERVER_META_ROOT,
  usersRootName,
} from '../core/entries.js'
import { asWriterId } from '../core/ids.js'
import type { Replica } from '../peers/replica.js'
import type {
  Dot,
  History,
  LifecycleEvent,
  ServerChange,
  ServerKnowledge,
  StateVector,
  WriteOp,
  WriteRecord,
} from './oracle/history.js'
import { covers, holds, unionOf } from './oracle/history.js'
import { StampRewrites } from './stamp-rewrites.js'

/** One operation the workload called, filled in as it runs. */
export interface PendingWrite {
  readonly peer: string
  readonly op: WriteOp
  readonly calledAt: number
  /** The recorder's sequence number when it was called. */
  readonly calledSeq: number
  knows: StateVector
  seq: number
  dot: Dot | undefined
  stamp: number | undefined
  ackedAt: number | undefined
  knowsAtAck: StateVector | undefined
  refused: boolean
  attached: boolean
  /**
   * Called while its writer held its own writes (a full sync's or a move's
   * staged wipe: the document in place was the new, still empty one): it
   * runs when the hold ends, and knows what the writer held then.
   */
  held: boolean
}

/** One of a peer's own transactions, as the ops it may hold need it. */
interface OwnTransaction {
  readonly replica: Replica | undefined
  readonly seq: number
  readonly dot: Dot
  readonly knows: StateVector
  /** The entry it left per user, and the stamp per policy field it set. */
  readonly entries: Map<string, unknown>
  readonly policyStamps: Map<string, number | undefined>
}

/** A full sync the workload asked for. */
export interface PendingSync {
  readonly device: string
  readonly calledAt: number
}

/** See the module comment. */
export class HistoryRecorder {
  #seq = 0
  readonly #writes: PendingWrite[] = []
  readonly #waiting = new Map<string, PendingWrite[]>()
  readonly #replicas = new Map<string, Replica>()
  readonly #changes: ServerChange[] = []
  #knowledge: ServerKnowledge[] = []
  readonly #lifecycle: LifecycleEvent[] = []
  /** Per peer and user (or `policy:<field>`): its latest own transaction that changed it. */
  readonly #lastOwn = new Map<string, OwnTransaction>()
  /** Operations that stand for a state vector (see the module comment). */
  readonly #aliases: Array<{ readonly dot: Dot; readonly vector: StateVector }> = []
  /** Per device: every clientID it wrote with. */
  readonly #ownClients = new Map<string, Set<number>>()
  /** Per device with a move staged: what its carried entries stand for. */
  readonly #carrying = new Map<string, StateVector>()
  /**
   * Per device, for each stamp rewrite noted (in order): the seq of its
   * first own transaction that holds the stamps it gave. A write recorded
   * at that seq or later read its stamp after the rewrite, whenever the
   * rewrite was noted (it is noted once durable).
   */
  readonly #rewriteSeqs = new Map<string, number[]>()
  /** Per device: its own transactions since its last stamp rewrite, with the stamps they left. */
  readonly #ownSinceRewrite = new Map<
    string,
    Array<{ readonly seq: number; readonly stamps: ReadonlySet<number> }>
  >()

  constructor(
    readonly server: string,
    readonly devices: readonly string[],
    readonly schemaFields: readonly string[],
    readonly now: () => number,
    /** The stamps devices rewrote since (a write counts with its stamps as they stand). */
    private readonly rewrites: StampRewrites = new StampRewrites(),
  ) {}

  /** A peer (re)started with `replica`: watch its document (and the ones a wipe puts in place). */
  attach(peer: string, replica: Replica): void {
    this.#replicas.set(peer, replica)
    // A move staged by an earlier incarnation ended with it.
    this.#carrying.delete(peer)
    // Operations of an earlier incarnation that never reached a transaction never will.
    this.#waiting.set(peer, [])
    if (peer === this.server) {
      // What the server held only in memory before a crash is not knowledge it kept.
      const held = this.#vectorOf(replica.doc)
      this.#knowledge = this.#knowledge.filter((k) => covers(held, k.vector))
    }
    const watch = (doc: Y.Doc): void => {
      doc.on('afterTransaction', (tr: Y.Transaction) => {
        if (this.#replicas.get(peer) === replica) this.#transaction(peer, doc, tr)
      })
    }
    watch(replica.doc)
    replica.onReset(() => watch(replica.doc))
  }

  /** The workload calls `op` on `peer` now. */
  begin(peer: string, op: WriteOp): PendingWrite {
    const replica = this.#replicas.get(peer)
    const pending: PendingWrite = {
      peer,
      op,
      calledAt: this.now(),
      calledSeq: ++this.#seq,
      knows: replica === undefined ? new Map() : this.#vectorOf(replica.doc),
      seq: 0,
      dot: undefined,
      stamp: undefined,
      ackedAt: undefined,
      knowsAtAck: undefined,
      refused: false,
      attached: false,
      held: replica?.holdingWrites === true,
    }
    this.#writes.push(pending)
    this.#waiting.get(peer)?.push(pending)
    return pending
  }

  /**
   * `write`'s promise resolved (it did something). Its transaction is the
   * last of this peer's own that changed the user before now: a
   * transaction matched earlier may have been another one of the same
   * user (a device's merge of its own entries while a full sync held the
   * write back).
   */
  acked(write: PendingWrite): void {
    write.ackedAt = this.now()
    const replica = this.#replicas.get(write.peer)
    const op = write.op
    const last = this.#lastOwn.get(
      `${write.peer}\u0000${op.kind === 'policy' ? `policy:${op.field}` : op.user}`,
    )
    const local = op.kind === 'delete' && write.peer !== this.server
    if (!local && last !== undefined && last.seq > write.calledSeq && last.replica === replica) {
      write.attached = true
      write.seq = last.seq
      write.dot = last.dot
      write.knows = last.knows
      write.stamp =
        op.kind === 'policy'
          ? last.policyStamps.get(op.field)
          : stampOf(last.entries.get(op.user), op, write.peer === this.server)
    }
    if (!write.attached) {
      write.seq = ++this.#seq
      write.knowsAtAck = replica === undefined ? undefined : this.#vectorOf(replica.doc)
      // A held write ran when the hold ended, not in the staged document it was called on.
      if (write.held && write.knowsAtAck !== undefined) write.knows = write.knowsAtAck
    }
    this.#settle(write)
  }

  /** `write` was refused or did nothing (a delete of a user not shown). */
  refused(write: PendingWrite): void {
    write.refused = true
    this.#settle(write)
  }

  /** A full sync started on `device`. */
  fullSync(device: string): PendingSync {
    return { device, calledAt: this.now() }
  }

  /**
   * A full sync ended (`ok`: it completed). The simulator reports both the
   * full syncs the workload asked for and every commit of a full sync's
   * wipe (a retry the device ran by itself included), `calledAt` then being
   * when that wipe began.
   */
  fullSyncEnded(sync: PendingSync, ok: boolean): void {
    this.#lifecycle.push({
      kind: 'full-sync',
      seq: ++this.#seq,
      device: sync.device,
      calledAt: sync.calledAt,
      ackedAt: ok ? this.now() : undefined,
    })
  }

  /** A device's retention wipe ran (clears its local-only state). */
  retentionWipe(device: string): void {
    this.#lifecycle.push({ kind: 'retention-wipe', seq: ++this.#seq, device, at: this.now() })
  }

  /** A device's disk went back to a backup taken at `backupAt` (virtual ms, scheduler time). */
  restored(device: string, backupAt: number): void {
    this.#lifecycle.push({
      kind: 'restore',
      seq: ++this.#seq,
      device,
      backupAt,
      at: this.now(),
    })
  }

  /**
   * `device` rewrote its stamps that ran ahead (peers/replica/restamp.ts):
   * `fresh` maps each stamp replaced to its new one. Noted once durable,
   * after its transaction and maybe after writes made since.
   */
  stampsRewritten(device: string, fresh: ReadonlyMap<number, number>): void {
    if (fresh.size === 0) return
    this.rewrites.note(device, fresh)
    const given = new Set(fresh.values())
    const since = this.#ownSinceRewrite.get(device) ?? []
    const first = since.find((t) => [...t.stamps].some((stamp) => given.has(stamp)))
    // Without one (only device-specific stamps rewritten), every write so far came before.
    const list = this.#rewriteSeqs.get(device) ?? []
    list.push(first?.seq ?? this.#seq + 1)
    this.#rewriteSeqs.set(device, list)
    this.#ownSinceRewrite.set(
      device,
      first === undefined ? [] : since.filter((t) => t.seq > first.seq),
    )
  }

  /** How many of `peer`'s stamp rewrites a write recorded at `seq` read its stamp after. */
  #rewritesBefore(peer: string, seq: number): number {
    return (this.#rewriteSeqs.get(peer) ?? []).filter((at) => at <= seq).length
  }

  /** The history so far, with `docs` (every running peer's document) as what survived. */
  history(docs: Iterable<Y.Doc>): History {
    const writes: WriteRecord[] = []
    for (const w of this.#writes) {
      if (w.dot === undefined && w.ackedAt === undefined) {
        // Never reached a transaction nor an acknowledgement: refused, or its
        // peer went down first. Only a local-only change (a device's delete,
        // a patch of device-specific fields) may have been made durable
        // without a transaction; the oracle takes it as maybe done.
        if (w.refused || w.op.kind === 'put' || w.op.kind === 'policy') continue
        if (w.seq === 0) w.seq = ++this.#seq
      }
      const stamp =
        w.stamp === undefined
          ? undefined
          : this.rewrites.now(w.peer, w.stamp, this.#rewritesBefore(w.peer, w.seq))
      writes.push({
        seq: w.seq,
        writer: w.peer,
        op: w.op,
        dot: w.dot,
        knows: w.knows,
        stamp: stamp?.stamp,
        ...(stamp?.standIn === true ? { stampStandIn: true } : {}),
        calledAt: w.calledAt,
        ackedAt: w.ackedAt,
        ...(w.knowsAtAck === undefined ? {} : { knowsAtAck: w.knowsAtAck }),
      })
    }
    return {
      server: this.server,
      devices: this.devices,
      schemaFields: this.schemaFields,
      writes,
      serverChanges: this.#changes,
      serverKnowledge: this.#knowledge,
      lifecycle: this.#lifecycle,
      final: unionOf([...docs].map((doc) => this.#vectorOf(doc))),
    }
  }

  /**
   * The server built a generation's base (`snapshot`) from `old`: each of
   * the base's operations stands for everything `old` held.
   */
  generationBuilt(old: Y.Doc, snapshot: Uint8Array): void {
    const inherited = this.#vectorOf(old)
    const base = Y.decodeStateVector(Y.encodeStateVectorFromUpdate(snapshot))
    for (const [client, clock] of base)
      if (clock > 0) this.#aliases.push({ dot: { client, clock: clock - 1 }, vector: inherited })
  }

  /**
   * `device` staged its move, leaving `old`: its carry stands for the
   * devices' operations `old` held: its own, and other devices' it got
   * over the LAN, which the carry takes as its own fill where the new
   * generation lacks them (peers/device-sync/generation-move.ts,
   * `unseenRelayed`: a write the server never received survives so).
   */
  moveStaged(device: string, old: Y.Doc): void {
    const devices = new Set<number>()
    for (const [peer, clients] of this.#ownClients)
      if (peer !== this.server) for (const client of clients) devices.add(client)
    const held = new Map<number, number>()
    for (const [client, clock] of vectorOf(old)) if (devices.has(client)) held.set(client, clock)
    this.#carrying.set(device, this.#virtual(held))
  }

  /** `device`'s move ended (committed or not). */
  moveEnded(device: string): void {
    this.#carrying.delete(device)
  }

  /** A document's state vector, closed under the aliases. */
  #vectorOf(doc: Y.Doc): Map<number, number> {
    return this.#virtual(vectorOf(doc))
  }

  /** `raw` with what every alias it holds (directly or through another) stands for. */
  #virtual(raw: StateVector): Map<number, number> {
    const out = new Map(raw)
    if (this.#aliases.length === 0) return out
    const used = new Set<number>()
    for (let grew = true; grew;) {
      grew = false
      this.#aliases.forEach((alias, i) => {
        if (used.has(i) || !holds(out, alias.dot)) return
        used.add(i)
        grew = true
        for (const [client, clock] of alias.vector)
          if (clock > (out.get(client) ?? 0)) out.set(client, clock)
      })
    }
    return out
  }

  #settle(write: PendingWrite): void {
    const waiting = this.#waiting.get(write.peer)
    const i = waiting?.indexOf(write) ?? -1
    if (i >= 0) waiting?.splice(i, 1)
  }

  /** One transaction on `peer`'s document. */
  #transaction(peer: string, doc: Y.Doc, tr: Y.Transaction): void {
    const self = doc.clientID
    if (peer === this.server) {
      let brought = false
      for (const [client, clock] of tr.afterState)
        if (client !== self && (tr.beforeState.get(client) ?? 0) !== clock) brought = true
      if (brought) this.#knowledge.push({ seq: ++this.#seq, vector: this.#virtual(tr.afterState) })
    }
    const ownAfter = tr.afterState.get(self) ?? 0
    if (ownAfter <= (tr.beforeState.get(self) ?? 0)) return
    const dot = { client: self, clock: ownAfter - 1 }
    let clients = this.#ownClients.get(peer)
    if (clients === undefined) {
      clients = new Set()
      this.#ownClients.set(peer, clients)
    }
    clients.add(self)
    // A moving device's own transaction is its carry: it stands for its old own operations.
    const carried = this.#carrying.get(peer)
    if (carried !== undefined) this.#aliases.push({ dot, vector: carried })
    const knows = this.#virtual(tr.beforeState)
    const seq = ++this.#seq
    const users = changedKeys(doc, tr, usersRootName(asWriterId(peer)))
    const fields = changedKeys(doc, tr, SERVER_META_ROOT)
    const waiting = this.#waiting.get(peer) ?? []
    const own: OwnTransaction = {
      replica: this.#replicas.get(peer),
      seq,
      dot,
      knows,
      entries: new Map(),
      policyStamps: new Map(),
    }
    const isServer = peer === this.server
    for (const user of users) {
      own.entries.set(user, doc.getMap(usersRootName(asWriterId(peer))).get(user))
      this.#lastOwn.set(`${peer}\u0000${user}`, own)
    }
    for (const field of fields) {
      own.policyStamps.set(field, policyStamp(doc, field))
      this.#lastOwn.set(`${peer}\u0000policy:${field}`, own)
    }
    if (!isServer) {
      // Found again by the stamps it left when this device rewrites them.
      const stamps = new Set<number>()
      for (const value of own.entries.values())
        for (const stamp of Object.values(asDeviceEntry(value)?.s ?? {})) stamps.add(stamp)
      if (stamps.size > 0) {
        const since = this.#ownSinceRewrite.get(peer) ?? []
        since.push({ seq, stamps })
        this.#ownSinceRewrite.set(peer, since)
      }
    }
    let policy = false
    for (const write of [...waiting]) {
      const op = write.op
      const matches = op.kind === 'policy' ? fields.has(op.field) : users.has(op.user)
      // A device's delete is local: it has no transaction of its own.
      if (!matches || (op.kind === 'delete' && !isServer)) continue
      write.attached = true
      write.seq = seq
      write.dot = dot
      write.knows = knows
      write.stamp =
        op.kind === 'policy'
          ? own.policyStamps.get(op.field)
          : stampOf(own.entries.get(op.user), op, isServer)
      if (op.kind === 'policy') policy = true
      this.#settle(write)
    }
    if (peer !== this.server) return
    for (const user of users)
      this.#changes.push({
        seq,
        user,
        dot,
        byPolicy: policy,
        stamp: asServerEntry(own.entries.get(user))?.t,
      })
  }
}

/** A document's state vector as a map. */
function vectorOf(doc: Y.Doc): Map<number, number> {
  return Y.decodeStateVector(Y.encodeStateVector(doc))
}

/** The keys of root `name` that transaction `tr` changed. */
function changedKeys(doc: Y.Doc, tr: Y.Transaction, name: string): Set<string> {
  const type = doc.share.get(name)
  const keys = type === undefined ? undefined : tr.changed.get(type)
  const out = new Set<string>()
  for (const key of keys ?? []) if (key !== null) out.add(key)
  return out
}

/** The stamp a policy entry holds. */
function policyStamp(doc: Y.Doc, field: string): number | undefined {
  return asPolicyEntry(doc.getMap(SERVER_META_ROOT).get(field))?.t
}

/**
 * The stamp of the write a transaction left in its writer's entry (`value`):
 * the server's `t`; a device's latest stamp of the fields the write named
 * (a put names all). The entry also carries stamps of earlier writes (of
 * fields this one did not write, such as device-specific ones): the write's
 * own stamp is the latest.
 */
function stampOf(value: unknown, op: WriteOp, isServer: boolean): number | undefined {
  if (isServer) return asServerEntry(value)?.t
  const entry = asDeviceEntry(value)
  if (entry === undefined) return undefined
  const named = op.kind === 'patch' ? Object.keys(op.fields) : Object.keys(entry.s)
  const stamps = named.map((field) => entry.s[field]).filter((s): s is number => s !== undefined)
  if (stamps.length === 0) return undefined
  return Math.max(...stamps)
}
