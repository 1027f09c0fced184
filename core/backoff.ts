/**
 * Reconnect delays: exponential backoff with full jitter, bounded by
 * `netLimits`. A site's devices coming back after a server restart (or a
 * LAN peer returning) do not all retry in the same instant. Pure: the random
 * number comes in.
 */
import { netLimits } from './limits.js'

/** The delay before retry number `attempt` (0-based), given a uniform `random` in [0, 1). */
export function retryDelayMs(attempt: number, random: number): number {
  const cap = Math.min(
    netLimits.retryDelayMsMax,
    netLimits.retryDelayMsMin * 2 ** Math.min(attempt, 20),
  )
  return Math.max(netLimits.retryDelayMsMin / 2, random * cap)
}
