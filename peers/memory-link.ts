/**
 * A direct in-memory link between two replicas in one process: the initial
 * exchange of what each lacks (state vectors), then every durable change
 * forwarded as it happens, relays included (an update A got from B goes on
 * to C). Used by tests and by tools that run several peers in one process.
 */
import * as Y from 'yjs'
import type { Replica } from './replica.js'

let nextLinkId = 1

/** A live link; `settled()` resolves when nothing is in flight. */
export interface MemoryLink {
  settled(): Promise<void>
  close(): void
}

/** Links two replicas until `close()`. */
export function link(a: Replica, b: Replica): MemoryLink {
  const id = `memory-link-${nextLinkId++}`
  const inFlight = new Set<Promise<void>>()
  const errors: unknown[] = []
  const send = (to: Replica, update: Uint8Array): void => {
    const p = to
      .applyRemote(update, id)
      .catch((error: unknown) => {
        errors.push(error)
      })
      .finally(() => inFlight.delete(p))
    inFlight.add(p)
  }
  const forward = (from: Replica, to: Replica) =>
    from.onUpdate(({ update, from: origin }) => {
      if (origin !== id) send(to, update)
    })
  const offs = [forward(a, b), forward(b, a)]
  send(b, Y.encodeStateAsUpdate(a.doc, Y.encodeStateVector(b.doc)))
  send(a, Y.encodeStateAsUpdate(b.doc, Y.encodeStateVector(a.doc)))
  return {
    async settled() {
      while (inFlight.size > 0) await Promise.all([...inFlight])
      if (errors.length > 0) throw errors[0]
    },
    close() {
      for (const off of offs) off()
    },
  }
}
