/**
 * The checks of a simulation. Safety, during the run:
 * - server wins (rule 1): wherever the server entry a peer holds has a
 *   non-vacant shared value, that peer's view shows it (or hides the user
 *   because of the peer's own delete of exactly that server entry);
 * - server fills vacant (rule 2): the server has nothing left to adopt, ever
 *   (it adopts in the same durable batch as the update that brought a fill);
 * - device deletes never travel (rule 3) and nobody forges the server's
 *   part: the network tap (observer.ts);
 * - no acknowledged write is lost: the write ledger, checked once the site
 *   has converged.
 * Liveness, after healing: identical state vectors, no pending structs,
 * identical replicated views on every peer, equal to the document rebuilt
 * from every update sent.
 *
 * The views compared are the replicated ones (`resolveReplicated`: shared
 * and last-writer-wins fields with their sources), read straight from each
 * document, so they leave out what may differ between peers by design
 * (device deletes, device-specific values) and do not go through any code a
 * canary wraps.
 */
import * as Y from 'yjs'
import {
  asDeviceEntry,
  asPolicyEntry,
  asServerEntry,
  rootOwner,
  SERVER_META_ROOT,
  usersRootName,
  USERS_ROOT_PREFIX,
  type DeviceEntry,
  type PolicyEntry,
} from '../core/entries.js'
import type { HlcStamp } from '../core/hlc.js'
import { asUserId, SERVER_ID, type UserId, type WriterId } from '../core/ids.js'
import {
  adoptionFor,
  deleteHides,
  policyOf,
  resolveReplicated,
  valuesEqual,
  type PolicyTable,
  type UserReplica,
} from '../core/resolve.js'
import { isVacant } from '../core/vacant.js'
import type { Replica } from '../peers/replica.js'
import type { StampRewrites } from './stamp-rewrites.js'
import { TraceHash } from './trace-hash.js'

/** One broken rule. */
export interface Violation {
  /** Which check: `server-wins`, `server-fills-vacant`, `device-delete-sent`, ... */
  readonly rule: string
  /** Virtual ms since the start of the run when it was seen. */
  readonly atMs: number
  readonly peer?: string
  readonly user?: string
  readonly detail: string
}

// ------------------------------------------------------------ reading a document

/** What `doc` holds for user `id` (as Replica.replicaOf, but for any document). */
export function docReplicaOf(doc: Y.Doc, id: UserId): UserReplica {
  const server = asServerEntry(doc.getMap(usersRootName(SERVER_ID)).get(id))
  const devices: Array<readonly [WriterId, DeviceEntry]> = []
  for (const [writer, map] of deviceMaps(doc)) {
    const entry = asDeviceEntry(map.get(id))
    if (entry !== undefined) devices.push([writer, entry])
  }
  return { server, devices }
}

/** The device maps of `doc`, by writer, in name order. */
function deviceMaps(doc: Y.Doc): Array<readonly [WriterId, Y.Map<unknown>]> {
  const maps: Array<readonly [WriterId, Y.Map<unknown>]> = []
  for (const name of [...doc.share.keys()].sort()) {
    const owner = rootOwner(name)
    if (owner === undefined || owner === SERVER_ID || !name.startsWith(USERS_ROOT_PREFIX)) continue
    maps.push([owner, doc.getMap(name)])
  }
  return maps
}

/** The field policies `doc` holds. */
export function docPolicies(doc: Y.Doc): PolicyTable {
  const table = new Map<string, PolicyEntry>()
  for (const [field, value] of doc.getMap(SERVER_META_ROOT)) {
    const entry = asPolicyEntry(value)
    if (entry !== undefined) table.set(field, entry)
  }
  return table
}

/** Every user id any writer's map of `doc` mentions, sorted. */
export function docUserIds(doc: Y.Doc): UserId[] {
  const ids = new Set<string>(doc.getMap(usersRootName(SERVER_ID)).keys())
  for (const [, map] of deviceMaps(doc)) for (const id of map.keys()) ids.add(id)
  return [...ids].sort().map(asUserId)
}

/** A value as canonical text (byte arrays as hex), for comparing and hashing views. */
function canonical(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v instanceof Uint8Array ? `bytes:${Buffer.from(v).toString('hex')}` : v,
  )
}

/**
 * The replicated view of every user of `doc`: id -> canonical text of its
 * resolved replicated fields with their sources (users that do not exist
 * are left out).
 */
export function replicatedViews(doc: Y.Doc): Map<string, string> {
  const policies = docPolicies(doc)
  const views = new Map<string, string>()
  for (const id of docUserIds(doc)) {
    const resolved = resolveReplicated(docReplicaOf(doc, id), policies)
    if (resolved === undefined) continue
    const fields = [...resolved.entries()]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([field, { value, source }]) => [field, source, value])
    views.set(id, canonical(fields))
  }
  return views
}

/** A hash of a document's state vector and replicated views (the final state in the trace). */
export function stateDigest(doc: Y.Doc): string {
  const hash = new TraceHash().bytes(Y.encodeStateVector(doc))
  for (const [id, view] of replicatedViews(doc)) hash.text(id).text(view)
  for (const [field, entry] of [...docPolicies(doc)].sort(([a], [b]) => (a < b ? -1 : 1)))
    hash.text(field).text(entry.p).number(entry.t)
  return hash.hex()
}

// ------------------------------------------------------------ safety

/**
 * Rule 1 on one peer: every non-vacant shared value of the server entry the
 * peer holds shows in its view. Reads the view through the replica (the
 * code under test), the server entry and policies straight from its state.
 */
export function checkServerWins(
  peer: string,
  replica: Replica,
  atMs: number,
  users: Iterable<UserId> = replica.allUserIds(),
): Violation[] {
  const violations: Violation[] = []
  const policies = replica.policies()
  for (const id of users) {
    const server = replica.replicaOf(id).server
    if (server === undefined || server.d === 1 || server.f === undefined) continue
    const view = replica.view(id)
    if (view === undefined) {
      if (deleteHides(replica.localOf(id).deleted, replica.replicaOf(id))) continue
      violations.push({
        rule: 'server-wins',
        atMs,
        peer,
        user: id,
        detail: `${peer} hides ${id} although the server holds it (and ${peer} did not delete that version)`,
      })
      continue
    }
    const devices = replica.replicaOf(id).devices
    for (const [field, value] of Object.entries(server.f)) {
      if (isVacant(value) || policyOf(policies, field) !== 'shared') continue
      const floor = Math.max(policies.get(field)?.t ?? 0, server.x?.[field] ?? 0)
      if (contested(server.e, server.a?.[field], devices, field, floor)) continue
      const shown = (view as Record<string, unknown>)[field]
      if (!valuesEqual(shown, value)) {
        violations.push({
          rule: 'server-wins',
          atMs,
          peer,
          user: id,
          detail: `${peer} shows ${field}=${canonical(shown)} for ${id}, the server entry it holds says ${canonical(value)}`,
        })
      }
    }
  }
  return violations
}

/**
 * True when a device write of the user's current epoch, after the field's
 * policy and the server's last clear (`floor`), stamped before the server
 * took `field` (at any adoption level) and later than the write that level
 * holds, may replace
 * the adopted value (rule 2: the latest fill wins, whichever arrived first).
 * The oracle judges the value then; rule 1 holds only uncontested.
 */
function contested(
  epoch: number,
  adoption: ReadonlyArray<readonly [HlcStamp, string, HlcStamp]> | undefined,
  devices: ReadonlyArray<readonly [WriterId, DeviceEntry]>,
  field: string,
  floor: HlcStamp,
): boolean {
  return (adoption ?? []).some(([held, heldWriter, takenAt]) =>
    devices.some(([writer, entry]) => {
      const stamp = entry.s[field]
      if (entry.e < epoch || stamp === undefined || stamp <= floor || stamp >= takenAt) return false
      return stamp > held || (stamp === held && writer > heldWriter)
    }),
  )
}

/** Rule 2 on the server: no user has a device fill the server has not adopted. */
export function checkServerFills(
  replica: Replica,
  atMs: number,
  users: Iterable<UserId> = replica.allUserIds(),
): Violation[] {
  const violations: Violation[] = []
  const policies = replica.policies()
  for (const id of users) {
    const adoption = adoptionFor(replica.replicaOf(id), policies)
    if (adoption === undefined) continue
    violations.push({
      rule: 'server-fills-vacant',
      atMs,
      peer: SERVER_ID,
      user: id,
      detail: adoption.creates
        ? `the server has not taken on ${id}, which devices enrolled`
        : `the server has not adopted the device fills of ${id}: ${[...adoption.fields.keys(), ...adoption.vacated.keys()].join(', ')}`,
    })
  }
  return violations
}

/**
 * The users whose replicated state changed on a peer since the last look,
 * so that the safety checks run often without re-checking the whole roster:
 * it watches the replica's document (and the one that replaces it after a
 * wipe or a rollback). A change of field policies, or a new document,
 * makes every user due.
 */
export class ChangedUsers {
  #users = new Set<UserId>()
  #all = true

  constructor(replica: Replica) {
    const watch = (doc: Y.Doc): void => {
      doc.on('afterTransaction', (tr: Y.Transaction) => {
        if (this.#all) return
        for (const [type, keys] of tr.changed) {
          if (type._item !== null) continue
          if (type === doc.share.get(SERVER_META_ROOT)) {
            this.#all = true
            return
          }
          for (const key of keys) if (key !== null) this.#users.add(asUserId(key))
        }
      })
    }
    watch(replica.doc)
    replica.onReset(() => {
      this.#all = true
      watch(replica.doc)
    })
  }

  /** The users changed since the last call (every user the first time). */
  take(replica: Replica): Iterable<UserId> {
    const all = this.#all
    const users = this.#users
    this.#all = false
    this.#users = new Set()
    return all ? replica.allUserIds() : users
  }
}

// ------------------------------------------------------------ the write ledger

/** An acknowledged device write: the stamps its fields carried, and the server epoch it saw. */
interface DeviceWrite {
  readonly device: string
  readonly user: UserId
  readonly stamps: ReadonlyArray<readonly [string, HlcStamp]>
  readonly epoch: number
  readonly ackAtMs: number
  /** How many stamp rewrites of its device had been noted when its stamps were read. */
  readonly rewritesBefore: number
}

/** An acknowledged server write: the stamp of the server entry it left. */
interface ServerWrite {
  readonly user: UserId
  readonly stamp: HlcStamp
  readonly ackAtMs: number
}

/** What the ledger found. */
export interface LedgerResult {
  readonly violations: Violation[]
  /** Acknowledged writes checked. */
  readonly checked: number
  /** Writes a restore or a retention wipe rolled back before the server had them. */
  readonly rolledBack: number
}

/**
 * Every acknowledged write, to check at the end that none was lost: a write
 * is kept if the converged document still carries its stamps (or later ones)
 * in its writer's part, or a server delete superseded it. Its stamps are
 * read as they stand after its device's rewrites of stamps that ran ahead
 * (`StampRewrites`: a write its device replaced before a rewrite counts at
 * a stand-in below the write that replaced it).
 */
export class WriteLedger {
  readonly #device: DeviceWrite[] = []
  readonly #server: ServerWrite[] = []
  /** Per device: virtual times its disk was restored, with the backup's time. */
  readonly #restores = new Map<string, Array<{ backupAt: number; at: number }>>()
  /** Per device: virtual times of its retention wipes. */
  readonly #wipes = new Map<string, number[]>()

  /** `rewrites`: the stamps devices rewrote since (a write's stamps are read through it). */
  constructor(private readonly rewrites: StampRewrites) {}

  /** A device write resolved: records what its own entry now carries. */
  device(
    device: string,
    replica: Replica,
    user: UserId,
    fields: readonly string[],
    atMs: number,
  ): void {
    const own = replica.replicaOf(user).devices.find(([writer]) => writer === device)?.[1]
    if (own === undefined) return
    const stamps: Array<readonly [string, HlcStamp]> = []
    for (const field of fields) {
      const stamp = own.s[field]
      if (stamp !== undefined) stamps.push([field, stamp])
    }
    if (stamps.length === 0) return
    const rewritesBefore = this.rewrites.count(device)
    this.#device.push({ device, user, stamps, epoch: own.e, ackAtMs: atMs, rewritesBefore })
  }

  /** A server write resolved: records its entry's stamp. */
  server(replica: Replica, user: UserId, atMs: number): void {
    const entry = replica.replicaOf(user).server
    if (entry !== undefined) this.#server.push({ user, stamp: entry.t, ackAtMs: atMs })
  }

  restored(device: string, backupAt: number, at: number): void {
    const list = this.#restores.get(device) ?? []
    list.push({ backupAt, at })
    this.#restores.set(device, list)
  }

  retentionWipe(device: string, at: number): void {
    const list = this.#wipes.get(device) ?? []
    list.push(at)
    this.#wipes.set(device, list)
  }

  /** Devices whose data a restore or a retention wipe rolled back at some point. */
  rolledBackDevices(): Set<string> {
    return new Set([...this.#restores.keys(), ...this.#wipes.keys()])
  }

  /**
   * Checks every recorded write against the converged document `doc`. With
   * `serverOnly` (the site did not converge, so device writes may just not
   * have arrived), only the server's own writes, which its document must
   * hold whatever happened to the network.
   */
  check(doc: Y.Doc, atMs: number, serverOnly = false): LedgerResult {
    const violations: Violation[] = []
    let rolledBack = 0
    const serverMap = doc.getMap(usersRootName(SERVER_ID))
    for (const write of this.#server) {
      const entry = asServerEntry(serverMap.get(write.user))
      if (entry !== undefined && entry.t >= write.stamp) continue
      violations.push({
        rule: 'acknowledged-write-lost',
        atMs,
        peer: SERVER_ID,
        user: write.user,
        detail: `the server's write to ${write.user} acknowledged at ${write.ackAtMs} ms (stamp ${write.stamp}) is gone (entry stamp ${entry?.t ?? 'none'})`,
      })
    }
    for (const write of serverOnly ? [] : this.#device) {
      const replica = docReplicaOf(doc, write.user)
      const own = replica.devices.find(([writer]) => writer === write.device)?.[1]
      const kept =
        (own !== undefined &&
          write.stamps.every(
            ([field, stamp]) =>
              (own.s[field] ?? 0) >=
              this.rewrites.now(write.device, stamp, write.rewritesBefore).stamp,
          )) ||
        (own !== undefined && own.e > write.epoch) ||
        (replica.server?.e ?? 0) > write.epoch
      if (kept) continue
      if (this.#rolledBack(write)) {
        rolledBack++
        continue
      }
      violations.push({
        rule: 'acknowledged-write-lost',
        atMs,
        peer: write.device,
        user: write.user,
        detail: `${write.device}'s write to ${write.user} (${write.stamps.map(([f]) => f).join(', ')}) acknowledged at ${write.ackAtMs} ms is gone`,
      })
    }
    const checked = this.#server.length + (serverOnly ? 0 : this.#device.length)
    return { violations, checked, rolledBack }
  }

  /** A restore from a backup older than the write, or a retention wipe after it. */
  #rolledBack(write: DeviceWrite): boolean {
    const restores = this.#restores.get(write.device) ?? []
    if (restores.some((r) => r.backupAt < write.ackAtMs && r.at >= write.ackAtMs)) return true
    return (this.#wipes.get(write.device) ?? []).some((at) => at >= write.ackAtMs)
  }
}

// ------------------------------------------------------------ convergence

/** Why a set of documents has not converged, or undefined when it has. */
export function notConverged(docs: ReadonlyArray<readonly [string, Y.Doc]>): string | undefined {
  const first = docs[0]
  if (first === undefined) return undefined
  const reference = Y.encodeStateVector(first[1])
  for (const [name, doc] of docs) {
    const pending = doc.store.pendingStructs
    if (pending !== null) {
      // Name what it waits for: a struct that never arrives is the bug.
      const missing = [...pending.missing].map(([client, clock]) => `${client}:${clock}`)
      return `${name} has pending structs (waiting for ${missing.slice(0, 3).join(', ')})`
    }
    if (doc.store.pendingDs !== null) return `${name} has a pending delete set`
    const vector = Y.encodeStateVector(doc)
    if (!sameBytes(vector, reference)) return `${name}'s state vector differs from ${first[0]}'s`
  }
  return undefined
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false
  // memcmp, not a loop in JavaScript: run on every update sent.
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(
    Buffer.from(b.buffer, b.byteOffset, b.byteLength),
  )
}

/**
 * Compares the converged peers' replicated views with each other and with
 * `rebuilt` (every update sent, merged). The rebuilt document may hold more
 * than the peers only in the parts of devices whose data a restore or a
 * retention wipe rolled back (sent, then lost before anyone kept it): the
 * users those items touch are left out of its comparison.
 */
export function compareViews(
  peers: ReadonlyArray<readonly [string, Y.Doc]>,
  rebuilt: Y.Doc,
  rolledBack: ReadonlySet<string>,
  atMs: number,
): { violations: Violation[]; lostUsers: number } {
  const violations: Violation[] = []
  const first = peers[0]
  if (first === undefined) return { violations, lostUsers: 0 }
  const reference = replicatedViews(first[1])
  for (const [name, doc] of peers.slice(1)) {
    const views = replicatedViews(doc)
    const diff = firstDifference(reference, views)
    if (diff !== undefined)
      violations.push({
        rule: 'views-differ',
        atMs,
        peer: name,
        user: diff,
        detail: `${name}'s replicated view of ${diff} differs from ${first[0]}'s: ${views.get(diff) ?? 'absent'} vs ${reference.get(diff) ?? 'absent'}`,
      })
  }
  const peerState = Y.decodeStateVector(Y.encodeStateVector(first[1]))
  const skipped = new Set<string>()
  for (const [client, clock] of Y.decodeStateVector(Y.encodeStateVector(rebuilt))) {
    const theirs = peerState.get(client) ?? 0
    if (clock <= theirs) continue
    for (const struct of rebuilt.store.clients.get(client) ?? []) {
      if (struct.id.clock + struct.length <= theirs || !(struct instanceof Y.Item)) continue
      const root = rootNameOf(rebuilt, struct)
      const owner = root === undefined ? undefined : rootOwner(root)
      if (owner !== undefined && rolledBack.has(owner) && struct.parentSub !== null) {
        skipped.add(struct.parentSub)
        continue
      }
      violations.push({
        rule: 'rebuild-differs',
        atMs,
        detail: `the rebuilt document holds ${root ?? 'an item'} from client ${client} at clock ${struct.id.clock}, which no converged peer has`,
      })
      break
    }
  }
  for (const [client, clock] of peerState) {
    if ((Y.getState(rebuilt.store, client) ?? 0) < clock) {
      violations.push({
        rule: 'rebuild-differs',
        atMs,
        detail: `peers hold client ${client} up to ${clock}, more than was ever sent (${Y.getState(rebuilt.store, client)})`,
      })
      break
    }
  }
  const rebuiltViews = replicatedViews(rebuilt)
  for (const id of skipped) {
    rebuiltViews.delete(id)
    reference.delete(id)
  }
  const diff = firstDifference(reference, rebuiltViews)
  if (diff !== undefined)
    violations.push({
      rule: 'rebuild-differs',
      atMs,
      user: diff,
      detail: `the rebuilt document's view of ${diff} differs from the peers': ${rebuiltViews.get(diff) ?? 'absent'} vs ${reference.get(diff) ?? 'absent'}`,
    })
  return { violations, lostUsers: skipped.size }
}

function firstDifference(a: Map<string, string>, b: Map<string, string>): string | undefined {
  for (const [id, view] of a) if (b.get(id) !== view) return id
  for (const id of b.keys()) if (!a.has(id)) return id
  return undefined
}

function rootNameOf(doc: Y.Doc, item: Y.Item): string | undefined {
  let type = item.parent as Y.AbstractType<unknown> | null
  while (type?._item != null) type = type._item.parent as Y.AbstractType<unknown> | null
  if (type === null) return undefined
  for (const [name, shared] of doc.share) if ((shared as unknown) === type) return name
  return undefined
}
