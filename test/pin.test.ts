/**
 * PIN hashes (issue 11; peers/pin.ts): scrypt with a versioned format,
 * peppered with the site key so that a roster copy or an export without the
 * key cannot be attacked offline; the old `sha256$` format still verifies
 * and is flagged for upgrade; a stored hash's scrypt cost is bounded; and
 * hashing off the main thread keeps writes in call order.
 */
import { createHash, randomBytes } from 'node:crypto'
import { afterEach, describe, expect, it } from 'vitest'
import { limits } from '../core/limits.js'
import { isPinHash, PIN_HASH_PATTERN } from '../core/schema.js'
import { createDevice } from '../peers/create-device.js'
import { hashPin, hashPinAsync, pinHashOutdated, verifyPin } from '../peers/pin.js'
import { createServer, type ServerPeer } from '../server-peer/create-server.js'
import { memoryStore } from '../storage/level-store.js'

const SITE_KEY = 'pin-site-key'
const closers: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close()
})

async function server(options: { siteKey?: string; open?: true }): Promise<ServerPeer> {
  const s = await createServer({ store: memoryStore(), ...options })
  closers.push(() => s.close())
  return s
}

/** A PIN hash in the format before issue 11: one salted SHA-256. */
function legacyHash(pin: string): string {
  const salt = randomBytes(16)
  const digest = createHash('sha256').update(salt).update(pin, 'utf8').digest('hex')
  return `sha256$${salt.toString('hex')}$${digest}`
}

describe('a PIN stored by a site with a key', () => {
  it('is a peppered scrypt hash: verifies with the site key only', async () => {
    const s = await server({ siteKey: SITE_KEY })
    await s.users.put({ id: 'u1', name: 'Ann', pin: '4711' })
    const stored = s.users.get('u1')?.pin as string
    expect(stored).toMatch(
      new RegExp(
        `^scrypt\\$ln=${limits.pinKdfLogN},r=${limits.pinKdfBlockSize},p=${limits.pinKdfParallelism},k=[0-9a-f]{8}\\$[0-9a-f]{32}\\$[0-9a-f]{64}$`,
      ),
    )
    expect(verifyPin('4711', stored, SITE_KEY)).toBe(true)
    expect(verifyPin('4712', stored, SITE_KEY)).toBe(false)
    // Without the key (a stolen copy) or with another site's: told, not just denied.
    expect(() => verifyPin('4711', stored)).toThrow(
      expect.objectContaining({ code: 'INVALID_OPTIONS' }),
    )
    expect(() => verifyPin('4711', stored, 'another-site')).toThrow(/another site/)
    expect(pinHashOutdated(stored, SITE_KEY)).toBe(false)
  })

  it('a device of the site verifies what the server stored, offline, with its own site key', async () => {
    const s = await server({ siteKey: SITE_KEY })
    const device = await createDevice({ id: 'D1', store: memoryStore(), siteKey: SITE_KEY })
    closers.push(() => device.close())
    await device.users.put({ id: 'u2', name: 'Bo', pin: '123456' })
    const onDevice = device.users.get('u2')?.pin as string
    expect(onDevice).toMatch(/,k=[0-9a-f]{8}\$/)
    expect(verifyPin('123456', onDevice, SITE_KEY)).toBe(true)
    // The same pepper on both: the server's hash verifies on the device's key.
    await s.users.put({ id: 'u3', name: 'Cy', pin: '9999' })
    expect(verifyPin('9999', s.users.get('u3')?.pin as string, SITE_KEY)).toBe(true)
  })
})

describe('an open site (no site key)', () => {
  it('stores an unpeppered scrypt hash, verified without a key', async () => {
    const s = await server({ open: true })
    await s.users.put({ id: 'u1', name: 'Ann', pin: '2580' })
    const stored = s.users.get('u1')?.pin as string
    expect(stored).toMatch(/^scrypt\$ln=\d+,r=\d+,p=\d+\$/)
    expect(verifyPin('2580', stored)).toBe(true)
    expect(verifyPin('2581', stored)).toBe(false)
  })
})

describe('old hashes', () => {
  it('`sha256$` hashes still verify, are kept as they are, and are flagged for upgrade', async () => {
    const s = await server({ siteKey: SITE_KEY })
    const old = legacyHash('4711')
    expect(verifyPin('4711', old)).toBe(true)
    expect(verifyPin('4712', old)).toBe(false)
    expect(pinHashOutdated(old)).toBe(true)
    // Existing data (an import, a replicated record) keeps its hash.
    await s.users.put({ id: 'u1', name: 'Ann', pin: old })
    expect(s.users.get('u1')?.pin).toBe(old)
    // The upgrade: the PIN set again in plain (e.g. right after it verified).
    await s.users.patch('u1', { pin: '4711' })
    const upgraded = s.users.get('u1')?.pin as string
    expect(upgraded.startsWith('scrypt$')).toBe(true)
    expect(pinHashOutdated(upgraded, SITE_KEY)).toBe(false)
    expect(verifyPin('4711', upgraded, SITE_KEY)).toBe(true)
    // An unpeppered hash on a site that now has a key is outdated too.
    expect(pinHashOutdated(hashPin('4711'), SITE_KEY)).toBe(true)
  })
})

describe("a stored hash's scrypt cost is bounded", () => {
  it('a hash naming a cost out of bounds is refused with INVALID_RECORD and changes nothing', async () => {
    const s = await server({ siteKey: SITE_KEY })
    const tail = `$${'a'.repeat(32)}$${'b'.repeat(64)}`
    const within = `scrypt$ln=${limits.pinKdfLogNMax},r=8,p=${limits.pinKdfParallelismMax}${tail}`
    expect(isPinHash(within)).toBe(true)
    for (const bad of [
      `scrypt$ln=${limits.pinKdfLogNMax + 1},r=8,p=1${tail}`,
      `scrypt$ln=30,r=8,p=1${tail}`,
      `scrypt$ln=${limits.pinKdfLogNMin - 1},r=8,p=1${tail}`,
      `scrypt$ln=12,r=16,p=1${tail}`,
      `scrypt$ln=12,r=8,p=${limits.pinKdfParallelismMax + 1}${tail}`,
      `scrypt$ln=12,r=8,p=0${tail}`,
    ]) {
      expect(PIN_HASH_PATTERN.test(bad) && !isPinHash(bad), bad).toBe(true)
      await expect(s.users.put({ id: 'u1', name: 'Ann', pin: bad }), bad).rejects.toMatchObject({
        code: 'INVALID_RECORD',
      })
      expect(verifyPin('1234', bad)).toBe(false)
    }
    expect(s.users.get('u1')).toBeUndefined()
  })
})

describe('hashing off the main thread', () => {
  it('keeps writes in call order: a put with a PIN, then a patch and a delete not awaited', async () => {
    const s = await server({ siteKey: SITE_KEY })
    const done = Promise.all([
      s.users.put({ id: 'u1', name: 'Ann', pin: '4711' }),
      s.users.patch('u1', { name: 'Anne' }),
      s.users.put({ id: 'u2', name: 'Bo', pin: '1234' }),
      s.users.put({ id: 'u3', name: 'Cy' }),
      s.users.delete('u2'),
      s.users.put({ id: 'u4', name: 'Di', pin: '5555' }),
      s.users.patch('u4', { pin: '6666' }),
    ])
    await done
    expect(s.users.get('u1')?.name).toBe('Anne')
    expect(verifyPin('4711', s.users.get('u1')?.pin as string, SITE_KEY)).toBe(true)
    expect(s.users.get('u2')).toBeUndefined()
    expect(s.users.get('u3')?.name).toBe('Cy')
    expect(verifyPin('6666', s.users.get('u4')?.pin as string, SITE_KEY)).toBe(true)
  })

  it('a bad record among pending hashes rejects alone; the others land', async () => {
    const s = await server({ siteKey: SITE_KEY })
    const results = await Promise.allSettled([
      s.users.put({ id: 'u1', name: 'Ann', pin: '4711' }),
      s.users.put({ id: 'u2', name: 'Bo', pin: '12' }),
      s.users.patch('nobody', { name: 'X' }),
      s.users.put({ id: 'u3', name: 'Cy', pin: '1234' }),
    ])
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'rejected', 'fulfilled'])
    expect(s.users.list().map((u) => u.id)).toEqual(['u1', 'u3'])
  })

  it('hashPinAsync and hashPin agree with verifyPin', async () => {
    const hashes = await Promise.all(
      Array.from({ length: limits.pinHashesInFlightMax * 3 }, (_, i) =>
        hashPinAsync(String(1000 + i), SITE_KEY),
      ),
    )
    hashes.forEach((h, i) => expect(verifyPin(String(1000 + i), h, SITE_KEY)).toBe(true))
    expect(verifyPin('0000', hashPin('0000'))).toBe(true)
  })
})
