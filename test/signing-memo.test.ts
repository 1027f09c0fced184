/**
 * The signature memo of core/signing.ts answers only the very bytes it saw:
 * a verification that passed once does not make a changed message, a
 * changed signature or another key pass, and a memoised signature is the
 * one Ed25519 computes (it is deterministic).
 */
import { createPublicKey, verify as edVerify } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { limits } from '../core/limits.js'
import { keyPairFromSeed, SPKI_PREFIX, signBytes, verifyBytes } from '../core/signing.js'

const key = keyPairFromSeed(new Uint8Array(32).fill(7))
const other = keyPairFromSeed(new Uint8Array(32).fill(8))

/** Node's own verification, without the memo. */
const nodeVerifies = (publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array) =>
  edVerify(
    null,
    message,
    createPublicKey({ key: Buffer.concat([SPKI_PREFIX, publicKey]), format: 'der', type: 'spki' }),
    signature,
  )

describe('signature memo', () => {
  it('answers a verification again only for the same key, message and signature', () => {
    const message = new TextEncoder().encode('envelope bytes')
    const signature = signBytes(key, message)
    expect(verifyBytes(key.publicKey, message, signature)).toBe(true)
    expect(verifyBytes(key.publicKey, message, signature)).toBe(true)
    const changed = message.slice()
    changed[0] = (changed[0] ?? 0) ^ 1
    expect(verifyBytes(key.publicKey, changed, signature)).toBe(false)
    const badSignature = signature.slice()
    badSignature[10] = (badSignature[10] ?? 0) ^ 1
    expect(verifyBytes(key.publicKey, message, badSignature)).toBe(false)
    expect(verifyBytes(other.publicKey, message, signature)).toBe(false)
    // A message one byte longer (the memo's keys join parts with a separator).
    expect(verifyBytes(key.publicKey, new Uint8Array([...message, 0]), signature)).toBe(false)
  })

  it('gives the signature Ed25519 computes, fresh each time (a caller may change it)', () => {
    const message = new TextEncoder().encode('same bytes, signed twice')
    const first = signBytes(key, message)
    first.fill(0)
    const second = signBytes(key, message)
    expect(nodeVerifies(key.publicKey, message, second)).toBe(true)
    expect(signBytes(other, message)).not.toEqual(second)
  })

  it('checks long messages each time without keeping them', () => {
    const message = new Uint8Array(limits.signatureMemoMessageBytesMax + 1).fill(3)
    const signature = signBytes(key, message)
    expect(verifyBytes(key.publicKey, message, signature)).toBe(true)
    message[5] = 4
    expect(verifyBytes(key.publicKey, message, signature)).toBe(false)
  })
})
