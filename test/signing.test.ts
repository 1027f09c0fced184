import { createPublicKey, verify as edVerify } from 'node:crypto'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import * as Y from 'yjs'
import { hasCode } from '../core/errors.js'
import {
  decodeCertificate,
  decodeEnvelope,
  deriveClientId,
  DERIVED_CLIENT_ID_MIN,
  encodeCertificate,
  encodeEnvelope,
  envelopeClients,
  envelopePieces,
  hasSmallOrder,
  joinProofBody,
  isDerivedClientId,
  issueCertificate,
  signJoinProof,
  verifyJoinProof,
  keyPairFromSeed,
  sealEnvelope,
  verifyCertificate,
  verifyEnvelope,
} from '../core/signing.js'
import { decodeMessage, encodeMessage, encodeSignedMessage } from '../core/protocol.js'
import { encodeClientsDiff, restrictUpdate } from '../core/update-parts.js'
import { seedFromEnv } from './helpers/property-seed.js'

const seed = (n: number): Uint8Array => new Uint8Array(32).fill(n)
const server = keyPairFromSeed(seed(1))
const device = keyPairFromSeed(seed(2))
const other = keyPairFromSeed(seed(3))
const SITE = 'site-a'

function deviceUpdate(nonce: number): Uint8Array {
  const doc = new Y.Doc()
  doc.clientID = deriveClientId(device.publicKey, nonce)
  doc.getMap('u:T-1').set('u1', { e: 0, f: { email: 'a@b.c' }, s: { email: 1 } })
  return Y.encodeStateAsUpdate(doc)
}

const cert = issueCertificate(server, {
  site: SITE,
  deviceId: 'T-1',
  publicKey: device.publicKey,
  issuedAt: 1_700_000_000_000,
  expiresAt: 1_700_000_000_000 + 7 * 24 * 3_600_000,
})

describe('keys', () => {
  it('a public key of small order is refused wherever a key is used', () => {
    const zero = new Uint8Array(32)
    const identity = new Uint8Array(32)
    identity[0] = 1
    const order8 = new Uint8Array(
      Buffer.from('26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05', 'hex'),
    )
    for (const key of [zero, identity, order8]) {
      expect(hasSmallOrder(key)).toBe(true)
      // An all-zero signature "verifies" for such keys: refused before that.
      expect(() =>
        verifyJoinProof(key, { site: SITE, deviceId: 'T-1', at: 1, signature: new Uint8Array(64) }),
      ).toThrow(expect.objectContaining({ code: 'SIGNATURE_INVALID' }))
    }
    for (const key of [device, other, server]) expect(hasSmallOrder(key.publicKey)).toBe(false)
    // A join proof that Ed25519 itself accepts for the all-zero key and
    // signature (about a quarter of messages do) is still refused.
    const zeroKey = createPublicKey({
      key: Buffer.concat([Buffer.from('302a300506032b6570032100', 'hex'), Buffer.from(zero)]),
      format: 'der',
      type: 'spki',
    })
    let at = 1
    while (!edVerify(null, joinProofBody(SITE, 'T-1', at), zeroKey, Buffer.alloc(64))) at++
    expect(() =>
      verifyJoinProof(zero, { site: SITE, deviceId: 'T-1', at, signature: new Uint8Array(64) }),
    ).toThrow(expect.objectContaining({ code: 'SIGNATURE_INVALID' }))
  })

  it('a seed gives the same key pair every time, different seeds different keys', () => {
    expect(keyPairFromSeed(seed(2)).publicKey).toEqual(device.publicKey)
    expect(device.publicKey).not.toEqual(other.publicKey)
    expect(device.publicKey.byteLength).toBe(32)
  })
})

describe('derived clientIDs', () => {
  it('lie in [2^32, 2^53), depend on key and nonce, and Yjs syncs with them', () => {
    const ids = new Set<number>()
    for (let n = 0; n < 1_000; n++) {
      const id = deriveClientId(device.publicKey, n)
      expect(isDerivedClientId(id)).toBe(true)
      expect(id).toBeGreaterThanOrEqual(DERIVED_CLIENT_ID_MIN)
      expect(Number.isSafeInteger(id)).toBe(true)
      ids.add(id)
    }
    expect(ids.size).toBe(1_000)
    expect(deriveClientId(device.publicKey, 7)).toBe(deriveClientId(device.publicKey, 7))
    expect(deriveClientId(other.publicKey, 7)).not.toBe(deriveClientId(device.publicKey, 7))
    expect(isDerivedClientId(2 ** 32 - 1)).toBe(false)

    // Yjs keeps clientIDs above 2^32 exactly through updates and state vectors.
    const a = new Y.Doc()
    Y.applyUpdate(a, deviceUpdate(5))
    const b = new Y.Doc()
    b.clientID = deriveClientId(other.publicKey, 0)
    b.getMap('u:T-2').set('u1', { e: 0, f: { name: 'x' }, s: { name: 2 } })
    Y.applyUpdate(a, Y.encodeStateAsUpdate(b))
    Y.applyUpdate(b, Y.encodeStateAsUpdate(a, Y.encodeStateVector(b)))
    expect(b.getMap('u:T-1').toJSON()).toEqual(a.getMap('u:T-1').toJSON())
    expect([...Y.decodeStateVector(Y.encodeStateVector(b)).keys()].sort()).toEqual(
      [deriveClientId(device.publicKey, 5), deriveClientId(other.publicKey, 0)].sort(),
    )
  })
})

describe('join proofs', () => {
  it('verify for the same site, device and time only, and with the device key only', () => {
    const at = 1_700_000_000_123
    const signature = signJoinProof(device, SITE, 'T-1', at)
    verifyJoinProof(device.publicKey, { site: SITE, deviceId: 'T-1', at, signature })
    for (const changed of [
      { site: 'site-b', deviceId: 'T-1', at },
      { site: SITE, deviceId: 'T-2', at },
      { site: SITE, deviceId: 'T-1', at: at + 1 },
    ]) {
      expect(() => verifyJoinProof(device.publicKey, { ...changed, signature })).toThrow(
        expect.objectContaining({ code: 'SIGNATURE_INVALID' }),
      )
    }
    expect(() =>
      verifyJoinProof(other.publicKey, { site: SITE, deviceId: 'T-1', at, signature }),
    ).toThrow(expect.objectContaining({ code: 'SIGNATURE_INVALID' }))
  })
})

describe('envelopes', () => {
  const update = deviceUpdate(9)
  const envelope = sealEnvelope(device, SITE, { writer: 'T-1', nonces: [9], update, cert })

  it('verify after an encode/decode round trip, with and without a certificate', () => {
    const back = decodeEnvelope(encodeEnvelope(envelope))
    expect(back).toEqual(envelope)
    verifyEnvelope(back, device.publicKey, SITE)
    verifyCertificate(back.cert!, server.publicKey, SITE)
    expect(envelopeClients(back, device.publicKey)).toEqual(
      new Set([deriveClientId(device.publicKey, 9)]),
    )
    const bare = sealEnvelope(server, SITE, { writer: 'server', nonces: [], update })
    verifyEnvelope(decodeEnvelope(encodeEnvelope(bare)), server.publicKey, SITE)
  })

  it('go into a signed message in pieces with the bytes encodeMessage makes of them whole', () => {
    const bare = sealEnvelope(server, SITE, { writer: 'server', nonces: [], update })
    const empty = sealEnvelope(server, SITE, {
      writer: 'server',
      nonces: [],
      update: new Uint8Array(),
    })
    for (const type of ['signed-update', 'signed-step2'] as const)
      for (const list of [[envelope], [bare], [empty], [envelope, bare, empty], []]) {
        const whole = encodeMessage({ type, envelopes: list.map(encodeEnvelope) })
        const pieces = encodeSignedMessage(type, list.map(envelopePieces))
        expect(pieces).toEqual(whole)
        const back = decodeMessage(pieces)
        expect(back.type).toBe(type)
        if (back.type !== type) continue
        expect(back.envelopes.map(decodeEnvelope)).toEqual(list)
      }
  })

  it('refuse another key, another site, another writer, other nonces', () => {
    const refused = (f: () => void): boolean => {
      try {
        f()
        return false
      } catch (error) {
        return hasCode(error, 'SIGNATURE_INVALID')
      }
    }
    expect(refused(() => verifyEnvelope(envelope, other.publicKey, SITE))).toBe(true)
    expect(refused(() => verifyEnvelope(envelope, device.publicKey, 'site-b'))).toBe(true)
    expect(
      refused(() => verifyEnvelope({ ...envelope, writer: 'T-2' }, device.publicKey, SITE)),
    ).toBe(true)
    expect(
      refused(() => verifyEnvelope({ ...envelope, nonces: [10] }, device.publicKey, SITE)),
    ).toBe(true)
    expect(refused(() => verifyCertificate(cert, other.publicKey, SITE))).toBe(true)
    expect(refused(() => verifyCertificate(cert, server.publicKey, 'site-b'))).toBe(true)
    expect(
      refused(() => verifyCertificate({ ...cert, deviceId: 'T-2' }, server.publicKey, SITE)),
    ).toBe(true)
    expect(
      refused(() =>
        verifyCertificate({ ...cert, publicKey: other.publicKey }, server.publicKey, SITE),
      ),
    ).toBe(true)
  })

  it('any changed byte is refused: it does not decode, or does not verify', () => {
    const bytes = encodeEnvelope(envelope)
    const runSeed = seedFromEnv()
    console.log(`signing tamper property: seed ${runSeed} (replay with ROSTERSYNC_SEED=${runSeed})`)
    fc.assert(
      fc.property(fc.nat(bytes.byteLength - 1), fc.integer({ min: 1, max: 255 }), (at, flip) => {
        const changed = bytes.slice()
        changed[at] = (changed[at] as number) ^ flip
        let decoded
        try {
          decoded = decodeEnvelope(changed)
        } catch (error) {
          return hasCode(error, 'MALFORMED_MESSAGE')
        }
        // It decoded: the signature, the certificate or the update changed.
        try {
          verifyEnvelope(decoded, device.publicKey, SITE)
          verifyCertificate(decoded.cert!, server.publicKey, SITE)
          if (decoded.writer !== decoded.cert!.deviceId) return true // caught by the caller's writer check
          return false
        } catch (error) {
          return hasCode(error, 'SIGNATURE_INVALID')
        }
      }),
      { seed: runSeed, numRuns: 2_000 },
    )
  })

  it('malformed bytes are MALFORMED_MESSAGE, never another error', () => {
    const runSeed = seedFromEnv()
    console.log(`signing decode property: seed ${runSeed} (replay with ROSTERSYNC_SEED=${runSeed})`)
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        try {
          decodeEnvelope(bytes)
          decodeCertificate(bytes)
        } catch (error) {
          return hasCode(error, 'MALFORMED_MESSAGE')
        }
        return true
      }),
      { seed: runSeed, numRuns: 2_000 },
    )
    expect(decodeCertificate(encodeCertificate(cert))).toEqual(cert)
  })
})

describe("one writer's part (core/update-parts.ts)", () => {
  it('holds exactly the writer structs and deletes, from a document or from an update', () => {
    const a = new Y.Doc()
    a.clientID = deriveClientId(device.publicKey, 1)
    const b = new Y.Doc()
    b.clientID = deriveClientId(other.publicKey, 1)
    for (let i = 0; i < 20; i++) {
      a.getMap('u:A').set(`u${i % 5}`, { e: 0, f: { title: `a${i}` }, s: { title: i } })
      b.getMap('u:B').set(`u${i % 3}`, { e: 0, f: { title: `b${i}` }, s: { title: i } })
    }
    Y.applyUpdate(a, Y.encodeStateAsUpdate(b))
    const mine = new Set([a.clientID])
    const fromDoc = encodeClientsDiff(a, new Map(), mine)
    const fromUpdate = restrictUpdate(Y.encodeStateAsUpdate(a), mine)
    for (const part of [fromDoc, fromUpdate]) {
      const decoded = Y.decodeUpdate(part)
      expect(new Set(decoded.structs.map((s) => s.id.client))).toEqual(mine)
      expect([...decoded.ds.clients.keys()]).toEqual([a.clientID])
      const fresh = new Y.Doc()
      Y.applyUpdate(fresh, part)
      expect(fresh.getMap('u:A').toJSON()).toEqual(a.getMap('u:A').toJSON())
      expect(fresh.getMap('u:B').size).toBe(0)
    }
    // Past a state vector: only what it lacks of the writer's structs.
    const half = Y.decodeStateVector(Y.encodeStateVector(a))
    half.set(a.clientID, 10)
    const rest = Y.decodeUpdate(encodeClientsDiff(a, half, mine))
    expect(Math.min(...rest.structs.map((s) => s.id.clock))).toBe(10)
  })
})
