/**
 * The door of a device's LAN links (issue 11): which waiting link makes
 * room for a newcomer when `netLimits.lanHandshakesInFlightMax` links wait
 * for their peers' certificates (peers/lan-sync.ts), and which libp2p
 * connections a device keeps (ConnectionDoor).
 */
import type { Multiaddr } from '@multiformats/multiaddr'
import type { Clock } from '../core/clock.js'
import { netLimits } from '../core/limits.js'

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

/** One libp2p connection as the door sees it. */
interface Held {
  readonly address: string
  /** Aborts the connection (the door's reason given). */
  readonly abort: (reason: string) => void
  /** Its admitted links open now. */
  admitted: number
  timer?: unknown
}

/**
 * The door of a device's libp2p connections (issue 11): a connection is
 * kept while it carries an admitted link, and for `netLimits.handshakeTimeoutMs`
 * after it opened or after its last admitted link closed; then it is
 * aborted. At most `netLimits.lanPeersMax` are kept: past it a connection
 * that carries no admitted link makes room (doorEvictee: the oldest of the
 * host holding the most), or the newcomer goes when every other is in use.
 * A key holder re-dialling as its connections are closed, or a device
 * that closes its links and keeps their connections (a revoked one too),
 * then cannot keep the slots its site's devices need.
 */
export class ConnectionDoor {
  private readonly held = new Map<string, Held>()

  constructor(private readonly clock: Clock) {}

  /** A connection opened (inbound or dialled). */
  opened(id: string, address: string, abort: (reason: string) => void): void {
    const waiting = [...this.held.entries()]
      .filter(([, h]) => h.admitted === 0)
      .map(([key, h]) => ({ key, address: h.address }))
    if (this.held.size >= netLimits.lanPeersMax) {
      if (waiting.length === 0) {
        abort('LAN_PEERS_MAX: this device has as many LAN peers as it takes')
        return
      }
      const evicted = doorEvictee(waiting, address)
      this.drop(
        evicted.key,
        'TOO_MANY_HANDSHAKES: a newcomer took the place of a waiting connection',
      )
    }
    const held: Held = { address, abort, admitted: 0 }
    this.held.set(id, held)
    this.arm(id, held)
  }

  /** A link on connection `id` was admitted. */
  admitted(id: string): void {
    const held = this.held.get(id)
    if (held === undefined) return
    held.admitted++
    this.clock.clearTimeout(held.timer)
    held.timer = undefined
  }

  /** An admitted link on connection `id` closed. */
  released(id: string): void {
    const held = this.held.get(id)
    if (held === undefined) return
    held.admitted = Math.max(0, held.admitted - 1)
    if (held.admitted === 0) this.arm(id, held)
  }

  /** A connection closed: nothing more to watch of it. */
  closed(id: string): void {
    const held = this.held.get(id)
    if (held === undefined) return
    this.clock.clearTimeout(held.timer)
    this.held.delete(id)
  }

  close(): void {
    for (const held of this.held.values()) this.clock.clearTimeout(held.timer)
    this.held.clear()
  }

  private arm(id: string, held: Held): void {
    this.clock.clearTimeout(held.timer)
    held.timer = this.clock.setTimeout(() => {
      held.timer = undefined
      if (held.admitted === 0)
        this.drop(id, 'AUTH_FAILED: no admitted LAN link within the handshake time')
    }, netLimits.handshakeTimeoutMs)
  }

  private drop(id: string, reason: string): void {
    const held = this.held.get(id)
    if (held === undefined) return
    this.closed(id)
    held.abort(reason)
  }
}
