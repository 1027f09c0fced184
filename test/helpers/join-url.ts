/**
 * A device's join request target with a signed join proof (PROTOCOL.md,
 * "Joining"), for tests that hand the server a connection themselves.
 */
import { signJoinProof, type KeyPair } from '../../core/signing.js'

/** `/roster?device=…&key=…&pub=…&at=…&proof=…`: `deviceId` joins with `key`, its proof made at `at`. */
export function joinTarget(deviceId: string, key: KeyPair, siteKey: string, at: number): string {
  const params = new URLSearchParams({
    device: deviceId,
    key: siteKey,
    pub: Buffer.from(key.publicKey).toString('base64url'),
    at: String(at),
    proof: Buffer.from(signJoinProof(key, 'roster', deviceId, at)).toString('base64url'),
  })
  return `/roster?${params.toString()}`
}
