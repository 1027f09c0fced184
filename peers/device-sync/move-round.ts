/**
 * The rest of a device's move to its server's generation once the move is
 * staged (peers/device-sync/generation-move.ts): fetch the new generation
 * whole, commit it with the carried own entries and the sync record in one
 * batch, then push the carried entries (they are own writes of the new
 * generation now). A failure leaves the move staged: the caller's round
 * fails and undoes it.
 */
import type { Clock } from '../../core/clock.js'
import type { SyncSession } from '../sync-session.js'
import type { GenerationMove } from './generation-move.js'
import type { ServerExchange } from './server-exchange.js'

/** What a move round needs of the controller. */
export interface MoveParts {
  readonly clock: Clock
  /** The sync record saying a full sync completed at `at`, stored with the commit. */
  readonly done: (at: number) => readonly [string, string, unknown]
  /** This device's id (its events name it). */
  readonly deviceId: string
  /** The move completes a full sync the caller asked for: clear the delete marks (rule 3). */
  readonly deletes: boolean
}

/** Completes a staged move over `session`; resolves with its time of completion. */
export async function moveGeneration(
  move: GenerationMove,
  server: ServerExchange,
  session: SyncSession,
  parts: MoveParts,
): Promise<number> {
  const from = move.current()
  const fetchedFor = move.stagedMove
  await server.fetch(session)
  const at = parts.clock.now()
  // The event goes in the commit's batch (a probe: a device killed just
  // after its move committed had moved with no event saying so).
  await move.commit([parts.done(at)], parts.deletes, fetchedFor, (to, relayed) => ({
    type: 'generation-moved',
    deviceId: parts.deviceId,
    message:
      `from generation ${from.n} to ${to.n}` +
      // The same number, another generation: the server's data was
      // restored from a backup or replaced (a probe read "0 to 0" as nothing).
      (from.n === to.n
        ? ' (another of the same number: the server was restored or replaced)'
        : '') +
      ': one full sync, own entries carried' +
      (relayed === 0
        ? ''
        : `, and other devices' writes the server does not hold for ${relayed} user(s) (relayed over the LAN, or lost by the server in a restore), as this device's own`),
  }))
  // The carried own entries are this device's writes of the new
  // generation: the server has them once its answer covers them.
  await server.push(session, () => undefined)
  return at
}
