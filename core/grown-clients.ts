/**
 * The clients a Yjs transaction added structs under, each with its clock
 * before and after the transaction.
 *
 * A transaction's `beforeState` and `afterState` name every clientID the
 * document has seen (a server's grows with every device, crash and full
 * sync: thousands on an old site), while a transaction adds under a few.
 * Several followers of a document need those few (the delete set, the
 * history count, the answer cache, the intake's test of a change): each
 * walked both vectors itself, with an entry array per client. This walks
 * them once per transaction, allocating only for the clients that grew,
 * and the followers share the result.
 */
import type * as Y from 'yjs'

/** One client a transaction added structs under: clocks [before, after). */
export interface GrownClient {
  readonly client: number
  readonly before: number
  readonly after: number
}

const found = new WeakMap<Y.Transaction, readonly GrownClient[]>()

/** The clients `tr` added structs under (read once its state after is set, in afterTransaction). */
export function grownClients(tr: Y.Transaction): readonly GrownClient[] {
  let grown = found.get(tr)
  if (grown === undefined) {
    const list: GrownClient[] = []
    const beforeState = tr.beforeState
    tr.afterState.forEach((after, client) => {
      const before = beforeState.get(client) ?? 0
      if (after > before) list.push({ client, before, after })
    })
    grown = list
    found.set(tr, grown)
  }
  return grown
}
