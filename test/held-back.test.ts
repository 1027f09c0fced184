/**
 * The bounds of held-back updates (peers/held-back.ts), by themselves: per
 * link in count and bytes, all links together in count and bytes (the
 * oldest go first), and none once its link is gone.
 */
import { describe, expect, it } from 'vitest'
import { limits } from '../core/limits.js'
import { HeldBackUpdates, type Held } from '../peers/held-back.js'
import { withLimits } from './helpers/limits.js'

let n = 0
/** A distinct update of `size` bytes from link `from`. */
const update = (from: string, size: number): Held => {
  const bytes = new Uint8Array(size)
  bytes.fill(n % 251)
  new DataView(bytes.buffer).setUint32(0, n++)
  return { bytes, from }
}
const bytesOf = (held: HeldBackUpdates<Held>): number =>
  held.all().reduce((sum, h) => sum + h.bytes.byteLength, 0)

describe('held-back updates', () => {
  it('keep at most heldBackBytesMax bytes of all links together, dropping the oldest', () => {
    withLimits(limits, { heldBackBytesMax: 10_000 })
    const held = new HeldBackUpdates<Held>()
    const first = update('a', 3_000)
    expect(held.add(first)).toBeUndefined()
    for (const from of ['b', 'c', 'd']) expect(held.add(update(from, 3_000))).toBeUndefined()
    expect(bytesOf(held)).toBeLessThanOrEqual(10_000)
    expect(held.all()).not.toContain(first)
    expect(held.length).toBe(3)
    expect(held.countFrom('a')).toBe(0)
  })

  it('forget a link once it is gone, and only it', () => {
    const held = new HeldBackUpdates<Held>()
    for (let i = 0; i < 5; i++) held.add(update(i % 2 === 0 ? 'gone' : 'stays', 100))
    held.dropFrom('gone')
    expect(held.countFrom('gone')).toBe(0)
    expect(held.countFrom('stays')).toBe(2)
    expect(held.all().every((h) => h.from === 'stays')).toBe(true)
    // Its share is whole again, and the count and bytes of what stays hold.
    withLimits(limits, { heldBackUpdatesPerLinkMax: 3 })
    for (let i = 0; i < 3; i++) expect(held.add(update('gone', 100))).toBeUndefined()
    expect(held.add(update('gone', 100))?.code).toBe('TOO_MANY_HELD_BACK')
    expect(bytesOf(held)).toBe(500)
  })

  it('refuse past a link share, in count and in bytes', () => {
    withLimits(limits, { heldBackUpdatesPerLinkMax: 2 })
    withLimits(limits, { heldBackBytesPerLinkMax: 1_000 })
    const held = new HeldBackUpdates<Held>()
    expect(held.add(update('a', 600))).toBeUndefined()
    expect(held.add(update('a', 600))?.code).toBe('TOO_MANY_HELD_BACK')
    expect(held.add(update('b', 10))).toBeUndefined()
    expect(held.add(update('b', 10))).toBeUndefined()
    expect(held.add(update('b', 10))?.code).toBe('TOO_MANY_HELD_BACK')
  })
})
