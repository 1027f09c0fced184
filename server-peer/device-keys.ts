/**
 * The public keys of a site's devices (PROTOCOL.md, "Signed writes"): bound
 * to a device id the first time the device joins with a valid join proof,
 * kept as peer-local records of the server's replica, never replicated.
 * A device whose id has a key may join only with that key; its envelopes
 * are checked with it.
 */
import type { Clock } from '../core/clock.js'
import type { WriterId } from '../core/ids.js'
import { limits, netLimits } from '../core/limits.js'
import { encodeMessage } from '../core/protocol.js'
import {
  encodeCertificate,
  issueCertificate,
  keyRevocationId,
  type KeyPair,
} from '../core/signing.js'
import type { Connection } from '../core/transport.js'
import type { Replica } from '../peers/replica.js'

const NAMESPACE = 'device-keys'

/** Device id → public key. */
export class DeviceKeys {
  private readonly keys = new Map<string, Uint8Array>()
  /** The times of each device's accepted join proofs within the skew bound, in memory (bounded). */
  private readonly joins = new Map<string, number[]>()

  constructor(private readonly replica: Replica) {
    for (const [id, value] of replica.recordsOf(NAMESPACE)) {
      if (typeof value === 'string') this.keys.set(id, new Uint8Array(Buffer.from(value, 'base64')))
    }
  }

  /** The key bound to a device, or undefined. */
  get(deviceId: string): Uint8Array | undefined {
    return this.keys.get(deviceId)
  }

  /**
   * Binds a key to a device that has none (in memory at once, so the
   * connection that proved it can be checked; durable when this resolves).
   */
  async bind(deviceId: string, key: Uint8Array): Promise<void> {
    this.keys.set(deviceId, key)
    await this.replica.setRecord(NAMESPACE, deviceId, Buffer.from(key).toString('base64'))
  }

  /**
   * Forgets the key bound to a device (durable when this resolves): the
   * next valid join proof binds its key (the administrator's reset, for a
   * replaced terminal). The old key is published among the revocations
   * (`r:server`, under `keyRevocationId`), so that the devices refuse its
   * certificates on the LAN before they expire.
   */
  async unbind(deviceId: string): Promise<void> {
    const old = this.keys.get(deviceId)
    this.keys.delete(deviceId)
    this.joins.delete(deviceId)
    await this.replica.setRecord(NAMESPACE, deviceId, undefined)
    if (old !== undefined) {
      const id = keyRevocationId(old)
      if (!this.replica.isRevoked(id))
        await this.replica.write((ctx) => ctx.setRevoked(id as WriterId, { t: ctx.stamp() }))
    }
  }

  /** Whether a proof of this device at `at` was accepted already (a replayed join URL). */
  joinSeen(deviceId: string, at: number): boolean {
    return this.joins.get(deviceId)?.includes(at) === true
  }

  /**
   * Remembers an accepted join proof's time, dropping those past the skew
   * bound (a proof that old is refused by its time anyway) and keeping at
   * most `joinProofsKeptPerDeviceMax` per device.
   */
  noteJoin(deviceId: string, at: number, now: number): void {
    const kept = (this.joins.get(deviceId) ?? []).filter(
      (t) => Math.abs(t - now) <= netLimits.joinSkewMsMax,
    )
    kept.push(at)
    if (kept.length > netLimits.joinProofsKeptPerDeviceMax) kept.shift()
    this.joins.delete(deviceId)
    this.joins.set(deviceId, kept)
    if (this.joins.size > limits.devicesRegisteredMax) {
      const oldest = this.joins.keys().next().value
      if (oldest !== undefined) this.joins.delete(oldest)
    }
  }
}

/**
 * Sends a device its certificate (in the server's `hello`) now, and again
 * every half of `limits.certificateTtlMs` while the link stays open, so a
 * device that stays connected renews its certificate long before its LAN
 * peers would refuse it. Returns the function that stops the renewals
 * (call it when the link closes).
 */
export function certifyLink(options: {
  readonly connection: Connection
  readonly key: KeyPair
  readonly site: string
  readonly deviceId: string
  readonly publicKey: Uint8Array
  readonly clock: Clock
  /** The site's generation statement (issue 13), sent in every hello once there is one. */
  readonly generation?: () => Uint8Array | undefined
}): () => void {
  const { connection, clock } = options
  let timer: unknown
  const hello = (): void => {
    if (!connection.open) return
    const issuedAt = clock.now()
    const certificate = issueCertificate(options.key, {
      site: options.site,
      deviceId: options.deviceId,
      publicKey: options.publicKey,
      issuedAt,
      expiresAt: issuedAt + limits.certificateTtlMs,
    })
    connection.send(
      encodeMessage({
        type: 'hello',
        serverKey: options.key.publicKey,
        certificate: encodeCertificate(certificate),
        ...(options.generation?.() === undefined
          ? {}
          : { generation: options.generation() as Uint8Array }),
      }),
    )
    timer = clock.setTimeout(hello, renewAfterMs())
  }
  hello()
  return () => clock.clearTimeout(timer)
}

/** When a certificate is renewed on an open link: half its life (within a timer's range). */
function renewAfterMs(): number {
  return Math.min(Math.floor(limits.certificateTtlMs / 2), 2 ** 31 - 1)
}
