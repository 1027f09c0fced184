/**
 * Reconnect delays: exponential backoff with jitter, bounded by `netLimits`.
 * A site's devices coming back after a server restart (or a LAN peer
 * returning) do not all retry in the same instant. Pure: the random number
 * comes in.
 */
import { createHash } from 'node:crypto'
import { netLimits } from './limits.js'

/**
 * The delay before retry number `attempt` (0-based), given a uniform
 * `random` in [0, 1): in [cap / 2, cap), where the cap doubles from
 * `retryDelayMsMin` up to `retryDelayMsMax`. Half of the cap is fixed
 * ("equal jitter") so that an unreachable server sees at most one attempt
 * per `retryDelayMsMax / 2` from a device once the cap is reached, however
 * the random numbers fall; the other half still spreads devices apart.
 */
export function retryDelayMs(attempt: number, random: number): number {
  const cap = Math.min(
    netLimits.retryDelayMsMax,
    netLimits.retryDelayMsMin * 2 ** Math.min(Math.max(0, attempt), 20),
  )
  return cap / 2 + clampUnit(random) * (cap / 2)
}

/**
 * The delay before reconnecting after the server closed with 1001 (it is
 * restarting): uniform over `[0, reconnectAfterRestartSpreadMs)`, so that a
 * site's devices come back spread over that long rather than in one burst.
 */
export function restartReconnectDelayMs(random: number): number {
  return clampUnit(random) * netLimits.reconnectAfterRestartSpreadMs
}

/** `random` forced into [0, 1): a bad random source must not make a delay negative or huge. */
function clampUnit(random: number): number {
  return Number.isFinite(random) ? Math.min(Math.max(random, 0), 1 - Number.EPSILON) : 0.5
}

/**
 * The delay before reconnecting after the server closed with 4412 (a new
 * generation, issue 13): hash(deviceId) mod `generationMoveSpreadMs`. Each
 * device comes back at its own fixed point of the spread, so a site's
 * devices make their one full sync of the new generation spread evenly
 * over it, never all at once, whatever their random sources do.
 */
export function generationMoveDelayMs(deviceId: string): number {
  const digest = createHash('sha256').update(deviceId).digest()
  return digest.readUInt32BE(0) % netLimits.generationMoveSpreadMs
}
