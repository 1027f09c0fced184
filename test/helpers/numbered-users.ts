/**
 * A roster of `count` numbered users (`u0`, `u1`, ...), put 500 at a time:
 * the answers' tests need a server whose answers take many parts or turns.
 */
import type { ServerPeer } from '../../server-peer/create-server.js'

/** Puts users `u0` .. `u<count - 1>` into `server`, 500 at a time. */
export async function putNumberedUsers(server: ServerPeer, count: number): Promise<void> {
  for (let i = 0; i < count; i += 500)
    await Promise.all(
      Array.from({ length: Math.min(500, count - i) }, (_, j) =>
        server.users.put({ id: `u${i + j}`, name: `User ${i + j}`, email: `u${i + j}@ex.com` }),
      ),
    )
}
