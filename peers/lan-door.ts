/**
 * The door of a device's LAN links (issue 11): which waiting link makes
 * room for a newcomer when `netLimits.lanHandshakesInFlightMax` links wait
 * for their peers' certificates (peers/lan-sync.ts).
 */
import type { Multiaddr } from '@multiformats/multiaddr'

/**
 * The waiting link to close for a newcomer from host `newcomer` when the
 * door is full (`atDoor` not empty, in arrival order): the oldest link of
 * the host holding the most places, the newcomer counted with its host.
 * All hosts even: the oldest of all. (A host at the most holds a waiting
 * link: the newcomer's host alone at the most has one besides the newcomer.)
 */
export function doorEvictee<T extends { readonly address: string }>(
  atDoor: readonly T[],
  newcomer: string,
): T {
  const counts = new Map<string, number>([[newcomer, 1]])
  for (const link of atDoor) counts.set(link.address, (counts.get(link.address) ?? 0) + 1)
  let most = 0
  for (const count of counts.values()) most = Math.max(most, count)
  return atDoor.find((link) => counts.get(link.address) === most) ?? (atDoor[0] as T)
}

/** The IP address of a multiaddr (its `ip4` or `ip6` part, as the transport's gate reads it); the whole address otherwise. */
export function hostOf(address: Multiaddr): string {
  const ip = address.getComponents().find((c) => c.name === 'ip4' || c.name === 'ip6')
  return ip?.value ?? address.toString()
}
