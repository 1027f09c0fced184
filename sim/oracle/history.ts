/**
 * The history the oracle reads: what the simulator ran, stated without the
 * implementation's data layout. It imports nothing of the project (a test
 * reads this folder's import graph): the simulator's recorder
 * (`sim/history-recorder.ts`) fills it in.
 *
 * Causal knowledge is stated as Yjs state vectors (client → number of
 * operations held), which are a fact about what a peer's document held, not
 * a rule of rostersync: a write `A` is in the causal past of a write `B` when
 * `B`'s writer held `A`'s operation when it wrote `B`. Every write that
 * changed the replicated document carries its *dot* (one operation id of the
 * transaction that holds it) and the state vector its writer held just
 * before that transaction.
 */

/** A state vector: Yjs clientID → clock (how many operations of it are held). */
export type StateVector = ReadonlyMap<number, number>

/** One operation of a transaction: held by a peer whose state vector passes it. */
export interface Dot {
  readonly client: number
  readonly clock: number
}

/** True when `vector` holds the operation `dot`. */
export const holds = (vector: StateVector, dot: Dot): boolean =>
  (vector.get(dot.client) ?? 0) > dot.clock

/** The union (pointwise maximum) of state vectors. */
export function unionOf(vectors: Iterable<StateVector>): Map<number, number> {
  const union = new Map<number, number>()
  for (const vector of vectors)
    for (const [client, clock] of vector)
      if (clock > (union.get(client) ?? 0)) union.set(client, clock)
  return union
}

/** True when `a` holds everything `b` holds. */
export function covers(a: StateVector, b: StateVector): boolean {
  for (const [client, clock] of b) if ((a.get(client) ?? 0) < clock) return false
  return true
}

/** A field's policy (SEMANTICS.md, "field policy"). */
export type Policy = 'shared' | 'device-specific' | 'last-writer-wins'

/** What the operation asked for, as the caller passed it. */
export type WriteOp =
  | {
      readonly kind: 'put'
      readonly user: string
      /** The whole record (id left out); absent fields are vacant. */
      readonly fields: Readonly<Record<string, unknown>>
    }
  | {
      readonly kind: 'patch'
      readonly user: string
      /** The fields named; a vacant value clears. */
      readonly fields: Readonly<Record<string, unknown>>
    }
  | { readonly kind: 'delete'; readonly user: string }
  | { readonly kind: 'policy'; readonly field: string; readonly policy: Policy }

/** One write by one writer (the server, or a device), as it ran. */
export interface WriteRecord {
  /** Order of recording across the whole site (a write's transaction, or its acknowledgement). */
  readonly seq: number
  /** `server` or a device id. */
  readonly writer: string
  readonly op: WriteOp
  /**
   * An operation of the transaction that carried the write into the
   * replicated document; undefined when it changed only local state (a
   * device's delete, a device-specific edit).
   */
  readonly dot: Dot | undefined
  /** The state vector the writer held when the write ran (before its transaction). */
  readonly knows: StateVector
  /**
   * The writer's hybrid-logical-clock stamp of the write (undefined without
   * a dot). Used only to order writes neither of which saw the other.
   */
  readonly stamp: number | undefined
  /**
   * `stamp` is a stand-in: the writer rewrote its stamps that ran ahead
   * after a later write of its own had replaced this one's (so the rewrite
   * never saw them); the write counts as made just before that later one,
   * and the stand-ins between the same two rewritten writes are equal.
   */
  readonly stampStandIn?: boolean
  /** Virtual ms of the call and of the acknowledgement (undefined: never acknowledged). */
  readonly calledAt: number
  readonly ackedAt: number | undefined
  /**
   * For local-only writes: whether the writer's state vector moved between
   * call and acknowledgement in a way that matters (the write may have seen
   * either); the oracle then accepts either outcome.
   */
  readonly knowsAtAck?: StateVector
}

/** A server transaction that changed its record of a user (what a device's delete compares against). */
export interface ServerChange {
  readonly seq: number
  readonly user: string
  readonly dot: Dot
  /**
   * The server's hybrid-logical-clock stamp of the change: when it adopted
   * a device's fill, device writes stamped before it could not have seen
   * the adoption (SEMANTICS.md rule 2). Absent: not known.
   */
  readonly stamp?: number | undefined
  /** The change came from a field-policy change (it re-initialises a field, it is no edit of the user). */
  readonly byPolicy: boolean
}

/** Device lifecycle events that touch local-only state. */
export type LifecycleEvent =
  | {
      readonly kind: 'full-sync'
      readonly seq: number
      readonly device: string
      readonly calledAt: number
      /** Undefined: it did not complete (failed, or the device went down). */
      readonly ackedAt: number | undefined
    }
  | {
      readonly kind: 'retention-wipe'
      readonly seq: number
      readonly device: string
      readonly at: number
    }
  | {
      readonly kind: 'restore'
      readonly seq: number
      readonly device: string
      /** When the backup now on disk was taken. */
      readonly backupAt: number
      readonly at: number
    }

/** The server's knowledge after a transaction that brought others' operations. */
export interface ServerKnowledge {
  readonly seq: number
  readonly vector: StateVector
}

/** Everything the oracle needs of one run. */
export interface History {
  readonly server: string
  readonly devices: readonly string[]
  /** Every field of the record schema (a put writes all of them). */
  readonly schemaFields: readonly string[]
  readonly writes: readonly WriteRecord[]
  readonly serverChanges: readonly ServerChange[]
  readonly serverKnowledge: readonly ServerKnowledge[]
  readonly lifecycle: readonly LifecycleEvent[]
  /** The union of every peer's state vector at the end: what survived. */
  readonly final: StateVector
}
