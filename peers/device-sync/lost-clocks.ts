/**
 * The server's operations a restore took away, as a device found them
 * (PROTOCOL.md, "A restored server"): per clientID of the server's, the
 * clock its restored server holds, past which the device held more. The
 * server takes a fresh clientID at every start, so nothing of such a
 * clientID past that clock will ever be written again: it is the
 * rolled-back state. A LAN peer that has not met the restored server yet
 * still holds it, and offers it again each time their link opens (a
 * refetch reopens it): taken, it would be found again at the next round,
 * fetched away, and offered again, for as long as that peer stays behind.
 * A device that noted the loss takes no envelope of the server's bringing
 * operations past such a clock over the LAN (peers/signed-link.ts). A
 * server that states more of such a clientID (an operator who restored the
 * wrong backup and then the right one; a loss found on a network that
 * duplicated an answer, as the simulator's does) holds it after all: the
 * note goes (settleLostClocks).
 *
 * It also keeps how far the device heard each of the server's clientIDs
 * over the LAN (heardOverLan): what the server must hold, if it lost
 * nothing, by the time it answers a step 1 sent after (ServerExchange).
 */
import type { UpdateRanges } from '../../core/update-scan.js'
import type { Replica } from '../replica.js'

/** Where the device keeps the clocks (a peer-local record: [client, clock] pairs). */
export const LOST_CLOCKS_RECORD = ['sync', 'lost-server-clocks'] as const

/** How many clientIDs are kept (the latest restores'). */
const LOST_KEPT = 64

/** None noted: what every envelope a LAN peer sends is checked against, nearly always. */
const NONE: ReadonlyMap<number, number> = new Map()

/** The clocks noted, by clientID (empty when none). */
export function lostClocks(replica: Replica): ReadonlyMap<number, number> {
  const stored = replica.record(...LOST_CLOCKS_RECORD)
  if (!Array.isArray(stored) || stored.length === 0) return NONE
  return new Map(stored as Array<[number, number]>)
}

/**
 * Notes `lost` (per clientID of the server's: the clock its restored
 * server holds). A clock noted before for the same clientID is kept when
 * lower (what was lost once stays lost).
 */
export async function noteLostClocks(
  replica: Replica,
  lost: ReadonlyMap<number, number>,
): Promise<void> {
  const clocks = new Map(lostClocks(replica))
  for (const [client, clock] of lost) {
    const before = clocks.get(client) ?? clock
    clocks.delete(client) // set again last: kept among the latest
    clocks.set(client, Math.min(clock, before))
  }
  await replica.setRecord(...LOST_CLOCKS_RECORD, [...clocks].slice(-LOST_KEPT))
}

/** Whether an update (its scan) brings operations past a noted clock. */
export function bringsLost(lost: ReadonlyMap<number, number>, ranges: UpdateRanges): boolean {
  if (lost.size === 0) return false
  for (const [client, to] of ranges.to) {
    const clock = lost.get(client)
    if (clock !== undefined && to > clock) return true
  }
  return false
}

/**
 * Drops the notes of clientIDs the server states more of in `theirs` (its
 * step 1): it holds them after all.
 */
export async function settleLostClocks(
  replica: Replica,
  theirs: ReadonlyMap<number, number>,
): Promise<void> {
  const clocks = lostClocks(replica)
  if (clocks.size === 0) return
  const kept = [...clocks].filter(([client, clock]) => (theirs.get(client) ?? 0) <= clock)
  if (kept.length < clocks.size) await replica.setRecord(...LOST_CLOCKS_RECORD, kept)
}

/** Per replica: how far it heard each of the server's clientIDs over the LAN. */
const heard = new WeakMap<Replica, Map<number, number>>()

/** The device applied an envelope of the server's a LAN peer relayed (its scan). */
export function noteHeardOverLan(replica: Replica, ranges: UpdateRanges): void {
  let clocks = heard.get(replica)
  if (clocks === undefined) heard.set(replica, (clocks = new Map<number, number>()))
  for (const [client, to] of ranges.to) clocks.set(client, Math.max(to, clocks.get(client) ?? 0))
}

/** How far the device heard each of the server's clientIDs over the LAN (since it started). */
export function heardOverLan(replica: Replica): ReadonlyMap<number, number> {
  return heard.get(replica) ?? NONE
}
