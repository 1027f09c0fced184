/**
 * The envelopes a device relayed lately, so that it relays each one once
 * (peers/signed-link.ts, `DeviceSigning`).
 *
 * A device relays an envelope that brings it something it lacks. An
 * envelope whose structs cannot be integrated yet (an earlier operation of
 * its client is missing) is held back, and the state vector does not move:
 * heard again, it still looks new. On a LAN where devices link to each
 * other in a ring or a clique, each copy was relayed to every other link,
 * each neighbour relayed it on, and the copies grew without end while the
 * gap lasted (swarm seed 2 of `bench/sim.ts`: thousands of copies of the
 * same server envelopes a virtual second, and the process past 3 GB).
 * Relaying it again brings a neighbour nothing the first relay did not: a
 * neighbour that lost it gets it from the envelope log at its next
 * exchange.
 *
 * Keyed by the envelope's signature and its certificate's (what makes two
 * envelopes of one writer differ), bounded: the oldest is forgotten first,
 * and forgetting one costs at most one more relay of it.
 */
import type { Envelope } from '../core/signing.js'

/** Envelopes remembered (about 200 bytes each). */
export const RELAY_MEMO_MAX = 4_096

/** A bounded set of the envelopes relayed lately. */
export class RelayMemo {
  private readonly seen = new Set<string>()

  /** The memo's key of an envelope. */
  static keyOf(envelope: Envelope): string {
    const signature = Buffer.from(envelope.signature).toString('base64')
    const cert = envelope.cert
    return cert === undefined
      ? signature
      : `${signature}/${Buffer.from(cert.signature).toString('base64')}`
  }

  /** True the first time `key` is offered (then remembered), false while it is remembered. */
  first(key: string): boolean {
    if (this.seen.has(key)) return false
    if (this.seen.size >= RELAY_MEMO_MAX) {
      const oldest = this.seen.values().next().value
      if (oldest !== undefined) this.seen.delete(oldest)
    }
    this.seen.add(key)
    return true
  }

  /** Forgets one envelope (the envelope log let it go: peers/signed-link.ts). */
  forget(key: string): void {
    this.seen.delete(key)
  }

  /** Forgets everything (the document was wiped: what comes next is new to it). */
  clear(): void {
    this.seen.clear()
  }
}
