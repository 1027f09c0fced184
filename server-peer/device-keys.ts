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
  type Certificate,
  type KeyPair,
} from '../core/signing.js'
import type { Connection } from '../core/transport.js'
import type { Replica } from '../peers/replica.js'

const NAMESPACE = 'device-keys'
/** A device's record while its key was reset and none is bound yet (awaitsKey). */
const RESET = 'reset: no key yet'
/** The revocations each device's key resets wrote (revokedByReset), its latest few. */
const RESETS = 'device-key-resets'
const RESETS_KEPT = 8
/** Where each device's accepted join proofs are kept (see noteJoin). */
const JOINS = 'device-joins'

/**
 * A device's accepted join proofs within the skew bound: their times, and
 * the latest time of those let go to keep at most
 * `netLimits.joinProofsKeptPerDeviceMax` (a proof at or before it is
 * refused: it may be one of them).
 */
interface Joins {
  readonly at: number[]
  readonly floor: number
}

function asJoins(value: unknown): Joins | undefined {
  if (typeof value !== 'object' || value === null) return undefined
  const { at, floor } = value as { at?: unknown; floor?: unknown }
  if (!Array.isArray(at) || !at.every((t) => Number.isSafeInteger(t))) return undefined
  return { at: at as number[], floor: Number.isSafeInteger(floor) ? (floor as number) : -1 }
}

/** Device id → public key. */
export class DeviceKeys {
  private readonly keys = new Map<string, Uint8Array>()
  /**
   * Each device's accepted join proofs within the skew bound (bounded),
   * kept as peer-local records too: a join URL captured before a restart
   * is no better after it.
   */
  private readonly joins = new Map<string, Joins>()
  /** The certificate issued last to each device, in memory (bounded; see {@link certificate}). */
  private readonly issued = new Map<string, Certificate>()
  /** Devices whose key was reset and that have not joined with one since (awaitsKey). */
  private readonly resetWaiting = new Set<string>()
  /** Each key's revocation id (keyRefused), by the key's bytes object. */
  private readonly revocationIds = new WeakMap<Uint8Array, string>()

  constructor(private readonly replica: Replica) {
    for (const [id, value] of replica.recordsOf(NAMESPACE)) {
      if (value === RESET) this.resetWaiting.add(id)
      else if (typeof value === 'string')
        this.keys.set(id, new Uint8Array(Buffer.from(value, 'base64')))
    }
    for (const [id, value] of replica.recordsOf(JOINS)) {
      const joins = asJoins(value)
      if (joins !== undefined) this.joins.set(id, joins)
    }
  }

  /** The key bound to a device, or undefined. */
  get(deviceId: string): Uint8Array | undefined {
    return this.keys.get(deviceId)
  }

  /** The ids other than `deviceId` bound to `deviceId`'s key (one terminal joined under several). */
  sharingKey(deviceId: string): string[] {
    const key = this.keys.get(deviceId)
    if (key === undefined) return []
    const ids: string[] = []
    for (const [id, other] of this.keys)
      if (id !== deviceId && Buffer.from(other).equals(Buffer.from(key))) ids.push(id)
    return ids
  }

  /**
   * True when the device's key was reset and no key is bound since: an
   * approval now would let the first proof that comes in (any holder of
   * the site key) take the id (see create-server's approve).
   */
  awaitsKey(deviceId: string): boolean {
    return this.resetWaiting.has(deviceId)
  }

  /**
   * True when `revocation` (a key's, keyRevocationId) was written by a
   * reset of this device's key: approving that key again for this device
   * takes it back; for another id it does not.
   */
  revokedByReset(deviceId: string, revocation: string): boolean {
    const resets = this.replica.record(RESETS, deviceId)
    return Array.isArray(resets) && resets.includes(revocation)
  }

  /**
   * The key of `deviceId`, now revoked with its device, is revoked for
   * good: a reset of another id sharing it no longer exempts that id
   * (revokedByReset). Else the key rejoined as that id, its approval took
   * the revocation back, and the revoked terminal joined under any new id
   * (a hostile probe). Durable when this resolves.
   */
  async revokedWithDevice(deviceId: string): Promise<void> {
    const key = this.keys.get(deviceId)
    if (key === undefined) return
    const revocation = keyRevocationId(key)
    const exempt = this.replica
      .recordsOf(RESETS)
      .filter(([, resets]) => Array.isArray(resets) && resets.includes(revocation))
    if (exempt.length === 0) return
    await this.replica.writeMeta((ctx) => {
      for (const [id, resets] of exempt)
        ctx.setRecord(
          RESETS,
          id,
          (resets as string[]).filter((noted) => noted !== revocation),
        )
    })
  }

  /**
   * True when `key` may not join as `deviceId`: it is revoked (its device
   * revoked, or a reset of another id's key), unless a reset of this id's
   * own key revoked it (the terminal kept it: it waits for approval, which
   * takes the revocation back). A revoked terminal joining under a new id
   * with its key was admitted, and its LAN peers took its writes (a probe).
   */
  keyRefused(deviceId: string, key: Uint8Array): boolean {
    // Asked for every envelope the server opens: the key's revocation id
    // (a SHA-256 fingerprint) is made once per bound key.
    let revocation = this.revocationIds.get(key)
    if (revocation === undefined) {
      revocation = keyRevocationId(key)
      this.revocationIds.set(key, revocation)
    }
    return this.replica.isRevoked(revocation) && !this.revokedByReset(deviceId, revocation)
  }

  /**
   * Binds a key to a device that has none (in memory at once, so the
   * connection that proved it can be checked; durable when this resolves).
   */
  async bind(deviceId: string, key: Uint8Array): Promise<void> {
    this.keys.set(deviceId, key)
    this.resetWaiting.delete(deviceId)
    await this.replica.setRecord(NAMESPACE, deviceId, Buffer.from(key).toString('base64'))
  }

  /**
   * Forgets the key bound to a device (durable when this resolves): the
   * next valid join proof binds its key (the administrator's reset, for a
   * replaced terminal). The old key is published among the revocations
   * (`r:server`, under `keyRevocationId`), so that the devices refuse its
   * certificates on the LAN before they expire; not with `revoke` false (a
   * device forgotten: the same terminal may join again with its key).
   */
  async unbind(deviceId: string, revoke = true): Promise<void> {
    const old = this.keys.get(deviceId)
    this.keys.delete(deviceId)
    // Its accepted proofs are kept (they age out): forgotten, a device's
    // join URL captured within the hour must not get in again.
    this.issued.delete(deviceId)
    const revocation = old !== undefined && revoke ? keyRevocationId(old) : undefined
    // A reset waits for the terminal's key (awaitsKey); a forgotten device is new.
    const marker = revoke ? RESET : undefined
    if (revoke) this.resetWaiting.add(deviceId)
    else this.resetWaiting.delete(deviceId)
    if (revocation === undefined || this.replica.isRevoked(revocation)) {
      await this.replica.setRecord(NAMESPACE, deviceId, marker)
      return
    }
    // One batch: a crash between the binding gone and the revocation
    // written left the old key neither bound nor revoked, and a reset
    // tried again found no key to revoke (crash probe).
    const resets = this.replica.record(RESETS, deviceId)
    const noted = [...(Array.isArray(resets) ? (resets as string[]) : []), revocation]
    await this.replica.write((ctx) => {
      ctx.setRecord(NAMESPACE, deviceId, marker)
      ctx.setRecord(RESETS, deviceId, noted.slice(-RESETS_KEPT))
      ctx.setRevoked(revocation as WriterId, { t: ctx.stamp() })
    })
  }

  /**
   * The certificate to send `deviceId` for `publicKey` at `now`: the one
   * issued to it last while that is for the same key and site and at most
   * `limits.certificateReuseMsMax` old by `now` (a clock that stepped back
   * gets a new one), else a new one, kept for next time. Ed25519 is
   * deterministic, so a certificate sent again is the same bytes, and the
   * device checks it from its signature memo and stores nothing.
   */
  certificate(
    key: KeyPair,
    site: string,
    deviceId: string,
    publicKey: Uint8Array,
    now: number,
  ): Certificate {
    const last = this.issued.get(deviceId)
    if (
      last !== undefined &&
      last.site === site &&
      Buffer.from(last.publicKey).equals(Buffer.from(publicKey)) &&
      last.issuedAt <= now &&
      now - last.issuedAt <= limits.certificateReuseMsMax
    )
      return last
    const certificate = issueCertificate(key, {
      site,
      deviceId,
      publicKey,
      issuedAt: now,
      expiresAt: now + limits.certificateTtlMs,
    })
    this.issued.delete(deviceId)
    this.issued.set(deviceId, certificate)
    if (this.issued.size > limits.devicesRegisteredMax) {
      const oldest = this.issued.keys().next().value
      if (oldest !== undefined) this.issued.delete(oldest)
    }
    return certificate
  }

  /**
   * Whether a proof of this device at `at` may have been accepted already
   * (a replayed join URL): one kept, or one at or before the latest let go.
   */
  joinSeen(deviceId: string, at: number): boolean {
    const joins = this.joins.get(deviceId)
    return joins !== undefined && (at <= joins.floor || joins.at.includes(at))
  }

  /**
   * Remembers an accepted join proof's time, dropping those past the skew
   * bound (a proof that old is refused by its time anyway) and keeping at
   * most `joinProofsKeptPerDeviceMax` per device; stored without waiting
   * (the admission does not wait on the disk for it).
   */
  noteJoin(deviceId: string, at: number, now: number): void {
    const prev = this.joins.get(deviceId)
    const recent = (t: number): boolean => Math.abs(t - now) <= netLimits.joinSkewMsMax
    const kept = (prev?.at ?? []).filter(recent)
    kept.push(at)
    let floor = prev !== undefined && recent(prev.floor) ? prev.floor : -1
    if (kept.length > netLimits.joinProofsKeptPerDeviceMax)
      floor = Math.max(floor, kept.shift() as number)
    const joins: Joins = { at: kept, floor }
    this.joins.delete(deviceId)
    this.joins.set(deviceId, joins)
    this.store(deviceId, joins)
    if (this.joins.size > limits.devicesRegisteredMax) {
      const oldest = this.joins.keys().next().value
      if (oldest !== undefined) this.forgetJoins(oldest)
    }
  }

  /** The latest time of this device's proofs accepted within the skew bound, if any. */
  latestJoin(deviceId: string): number | undefined {
    const joins = this.joins.get(deviceId)
    return joins === undefined ? undefined : Math.max(joins.floor, ...joins.at)
  }

  private forgetJoins(deviceId: string): void {
    if (this.joins.delete(deviceId)) this.store(deviceId, undefined)
  }

  private store(deviceId: string, joins: Joins | undefined): void {
    // A failed write leaves the memory as it is: replays are refused until
    // the next restart.
    this.replica.setRecord(JOINS, deviceId, joins).catch(() => undefined)
  }
}

/**
 * Sends a device its certificate (in the server's `hello`) now, and again
 * every half of `limits.certificateTtlMs` while the link stays open, so a
 * device that stays connected renews its certificate long before its LAN
 * peers would refuse it. The certificate comes from `keys`
 * ({@link DeviceKeys.certificate}: the last one issued while it is young).
 * Returns the function that stops the renewals (call it when the link
 * closes).
 */
export function certifyLink(options: {
  readonly connection: Connection
  readonly key: KeyPair
  readonly keys: DeviceKeys
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
    const certificate = options.keys.certificate(
      options.key,
      options.site,
      options.deviceId,
      options.publicKey,
      clock.now(),
    )
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
