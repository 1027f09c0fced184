/**
 * A peer's signing identity (PROTOCOL.md, "Signed writes"): its Ed25519 key
 * (a seed in its store, drawn from the injected random source, so the
 * simulator replays it), the nonces of the Yjs clientIDs it has written
 * under (each clientID is derived from the key and a nonce), and, on a
 * device, the server's pinned key and the certificate the server issued.
 *
 * Kept in the peer's store under `i/`, never replicated and never logged.
 */
import { netLimits } from '../core/limits.js'
import { hkdfSync } from 'node:crypto'
import { decodeValue, encodeValue } from '../core/codec.js'
import {
  decodeCertificate,
  deriveClientId,
  encodeCertificate,
  keyPairFromSeed,
  SEED_BYTES,
  type Certificate,
  type KeyPair,
} from '../core/signing.js'
import type { Store, StoreOp } from '../core/store.js'

const KEYS = {
  seed: 'i/seed',
  serverKey: 'i/server-key',
  certificate: 'i/cert',
  nonce: (clientId: number): string => `i/n/${clientId}`,
  noncesFrom: 'i/n/',
  noncesTo: 'i/n0',
} as const

/** Mints the clientIDs a replica writes under (see ReplicaOptions.clientIds). */
export interface ClientIdSource {
  /** A new clientID derived from this peer's key, and the store ops that keep its nonce. */
  mint(): { clientId: number; ops: StoreOp[] }
  /** Whether this peer can prove `clientId` its own (a clientID kept across a restart must be). */
  owns(clientId: number): boolean
}

/** One peer's keys. */
export class Identity implements ClientIdSource {
  private readonly nonces = new Map<number, number>()
  private pinned: Uint8Array | undefined
  private cert: Certificate | undefined
  private readonly pinListeners = new Set<() => void>()
  private readonly certListeners = new Set<() => void>()
  private lastJoinAt = 0

  private constructor(
    readonly key: KeyPair,
    /**
     * The seed of this peer's libp2p identity (its LAN peer id): derived
     * from its key's seed (HKDF, its own label: the LAN handshake never
     * signs with the key that signs writes), so the peer id stays the same
     * across restarts and the `/p2p/…` addresses others dial keep working.
     */
    readonly lanSeed: Uint8Array,
    private readonly store: Store,
    private readonly randomUint32: () => number,
  ) {}

  /** Loads the identity from `store`, creating the key on first start. */
  static async open(store: Store, randomUint32: () => number): Promise<Identity> {
    let seed = await store.get(KEYS.seed)
    if (seed === undefined || seed.byteLength !== SEED_BYTES) {
      const bytes = new Uint8Array(SEED_BYTES)
      const view = new DataView(bytes.buffer)
      for (let i = 0; i < SEED_BYTES; i += 4) view.setUint32(i, randomUint32() >>> 0)
      seed = bytes
      await store.batch([{ type: 'put', key: KEYS.seed, value: seed }])
    }
    const lanSeed = new Uint8Array(hkdfSync('sha256', seed, 'rostersync', 'libp2p identity', 32))
    const identity = new Identity(keyPairFromSeed(seed), lanSeed, store, randomUint32)
    for await (const [key, value] of store.range({ gte: KEYS.noncesFrom, lt: KEYS.noncesTo })) {
      identity.nonces.set(Number(key.slice(KEYS.noncesFrom.length)), Number(decodeValue(value)))
    }
    identity.pinned = await store.get(KEYS.serverKey)
    const cert = await store.get(KEYS.certificate)
    try {
      if (cert !== undefined) identity.cert = decodeCertificate(cert)
    } catch {
      // A certificate of an older format (without an expiry): the server
      // issues a new one on the next connection.
    }
    return identity
  }

  /** The raw public key. */
  get publicKey(): Uint8Array {
    return this.key.publicKey
  }

  mint(): { clientId: number; ops: StoreOp[] } {
    const nonce = this.randomUint32() >>> 0
    const clientId = deriveClientId(this.key.publicKey, nonce)
    this.nonces.set(clientId, nonce)
    return {
      clientId,
      ops: [{ type: 'put', key: KEYS.nonce(clientId), value: encodeValue(nonce) }],
    }
  }

  /**
   * The time a join proof names: the clock's, but always later than the
   * last one this process named (the server refuses a proof it has seen, as
   * a replay; should a restarted device name a time again, the refusal is
   * retried with the next one). Not stored: a write here would be one more
   * write on the connect path for no gain.
   */
  nextJoinAt(now: number): number {
    // (A last time far ahead was named before the server's time was
    // learned: CLOCK_SKEW in server-link-signing.ts.)
    const last = this.lastJoinAt - now > netLimits.joinSkewMsMax ? 0 : this.lastJoinAt
    const at = Math.max(Math.floor(now), last + 1)
    this.lastJoinAt = at
    return at
  }

  /** The server refused a join proof as replayed: the next names a time past `latest`. */
  joinAfter(latest: number): void {
    if (Number.isSafeInteger(latest) && latest > this.lastJoinAt) this.lastJoinAt = latest
  }

  owns(clientId: number): boolean {
    return this.nonces.has(clientId)
  }

  /** The nonce of one of this peer's own clientIDs, or undefined. */
  nonceOf(clientId: number): number | undefined {
    return this.nonces.get(clientId)
  }

  /** Every clientID this peer has written under (or may have). */
  ownClients(): Set<number> {
    return new Set(this.nonces.keys())
  }

  /** The server's key this device pinned on its first admission, if any. */
  get serverKey(): Uint8Array | undefined {
    return this.pinned
  }

  /** This device's certificate from the server, if it has one. */
  get certificate(): Certificate | undefined {
    return this.cert
  }

  /** Pins the server's key (first admission) and keeps the latest certificate. */
  async pinServer(serverKey: Uint8Array, cert: Certificate | undefined): Promise<void> {
    const ops: StoreOp[] = []
    if (this.pinned === undefined) {
      this.pinned = serverKey
      ops.push({ type: 'put', key: KEYS.serverKey, value: serverKey })
    }
    // The certificate this device holds already (the server sends its last
    // one again while it is young) is neither stored again nor announced.
    const encoded = cert === undefined ? undefined : encodeCertificate(cert)
    const renewed =
      encoded !== undefined &&
      (this.cert === undefined || !Buffer.from(encodeCertificate(this.cert)).equals(encoded))
    if (renewed) {
      this.cert = cert
      ops.push({ type: 'put', key: KEYS.certificate, value: encoded })
    }
    const first = ops.some((op) => op.key === KEYS.serverKey)
    if (ops.length > 0) await this.store.batch(ops)
    if (first) for (const listener of [...this.pinListeners]) listener()
    if (renewed) for (const listener of [...this.certListeners]) listener()
  }

  /** Calls `listener` whenever the server issues this device a certificate (a renewal); returns the unsubscribe function. */
  onCertificate(listener: () => void): () => void {
    this.certListeners.add(listener)
    return () => this.certListeners.delete(listener)
  }

  /** Calls `listener` once the server's key is pinned; returns the unsubscribe function. */
  onPinned(listener: () => void): () => void {
    this.pinListeners.add(listener)
    return () => this.pinListeners.delete(listener)
  }
}

/** The site an envelope is signed for: the server's public key (PROTOCOL.md). */
export const siteOf = (serverKey: Uint8Array): string => Buffer.from(serverKey).toString('base64')
