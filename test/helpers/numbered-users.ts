/**
 * A roster of `count` numbered users (`u0`, `u1`, ...), put 500 at a time:
 * the answers' tests need a server whose answers take many parts or turns.
 */
import type { Clock } from '../../core/clock.js'
import { createServer, type ServerPeer } from '../../server-peer/create-server.js'
import { memoryStore } from '../../storage/level-store.js'

/** Puts users `u0` .. `u<count - 1>` into `server`, 500 at a time. */
export async function putNumberedUsers(server: ServerPeer, count: number): Promise<void> {
  for (let i = 0; i < count; i += 500)
    await Promise.all(
      Array.from({ length: Math.min(500, count - i) }, (_, j) =>
        server.users.put({ id: `u${i + j}`, name: `User ${i + j}`, email: `u${i + j}@ex.com` }),
      ),
    )
}

/**
 * A server on a memory store, not listening (raw links reach it through
 * `accept`), holding users `u0` .. `u<count - 1>`; `closing` is given its
 * close (the test's list of things to close).
 */
export async function serverWithUsers(
  siteKey: string,
  count: number,
  closing: (close: () => Promise<void>) => void,
  clock?: Clock,
): Promise<ServerPeer> {
  const server = await createServer({
    store: memoryStore(),
    ...(clock === undefined ? {} : { clock }),
    listen: false,
    siteKey,
  })
  closing(() => server.close())
  await putNumberedUsers(server, count)
  return server
}
