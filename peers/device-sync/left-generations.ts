/**
 * The generations a device left, each with how far it held the server's
 * operations of it (PROTOCOL.md, "A restored server"). A server restored
 * from a backup taken before a compaction comes back on a generation the
 * device left: its hello names it, and the device moves back as to any
 * other. The delete marks (rule 3) it holds then name versions of the
 * generation it leaves, whose items the restored document does not hold
 * (a compaction copies the server's entries into new items); by stamps
 * alone a rollback looks like a change (the restored entry is older) and a
 * later change like none (the restored server's clock may name the very
 * stamp a mark names). What the device held of the server's clientIDs
 * there tells the two apart: an entry it held is a version from before the
 * compaction, which its mark, made since on that version or a later one,
 * hid (a rollback); an entry it never held was written after the restore,
 * or before the compaction but never heard (a change, or shown as one).
 */
import * as Y from 'yjs'
import { writersOfClients } from '../../core/authorize.js'
import { sameGeneration, type Generation } from '../../core/generation-statement.js'
import { SERVER_ID } from '../../core/ids.js'
import type { Replica } from '../replica.js'

/** Where the device keeps the generations it left. */
export const LEFT_GENERATIONS_RECORD = ['sync', 'left-generations'] as const

/** How many left generations are kept (the latest moves'). */
const LEFT_KEPT = 4

/** A generation the device left, and the server's clocks it held there ([client, clock] pairs). */
export interface LeftGeneration extends Generation {
  readonly clocks: ReadonlyArray<readonly [number, number]>
}

/** The generations the device left, the latest last. */
function leftGenerations(replica: Replica): LeftGeneration[] {
  const stored = replica.record(...LEFT_GENERATIONS_RECORD)
  return Array.isArray(stored) ? (stored as LeftGeneration[]) : []
}

/**
 * How far the device held the server's operations of `generation` when it
 * left it (clock by clientID), or undefined when it never left it.
 */
export function heldWhenLeft(
  replica: Replica,
  generation: Generation,
): ReadonlyMap<number, number> | undefined {
  const left = leftGenerations(replica).find((g) => sameGeneration(g, generation))
  return left === undefined ? undefined : new Map(left.clocks)
}

/**
 * The record that notes leaving `generation`, whose document is `doc`:
 * its server clocks replace any earlier note of it, and only the latest
 * `LEFT_KEPT` are kept.
 */
export function leftRecord(
  replica: Replica,
  generation: Generation,
  doc: Y.Doc,
): readonly [string, string, LeftGeneration[]] {
  const kept = leftGenerations(replica).filter((g) => !sameGeneration(g, generation))
  const note: LeftGeneration = { n: generation.n, id: generation.id, clocks: serverClocks(doc) }
  return [...LEFT_GENERATIONS_RECORD, [...kept, note].slice(-LEFT_KEPT)]
}

/**
 * The clocks `doc` holds of the server's clientIDs: those that write for the
 * server (the owner of their first item's root: writersOfClients, as the
 * server-part checks read it).
 */
export function serverClocks(doc: Y.Doc): Array<[number, number]> {
  const out: Array<[number, number]> = []
  for (const [client, writer] of writersOfClients(doc, doc.store.clients.keys()))
    if (writer === SERVER_ID) out.push([client, Y.getState(doc.store, client)])
  return out
}
