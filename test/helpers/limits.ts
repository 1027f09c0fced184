/**
 * Bounds of core/limits.ts changed for one test: `withLimits(netLimits, {
 * generationMovesInFlightMax: 2 })` sets them and puts each back when the
 * test finishes, passed or failed (after its `afterEach` hooks). The bounds
 * are read where they are used, so a change takes effect at once; call it
 * again in the same test to change them further (each call restores its own).
 */
import { onTestFinished } from 'vitest'

/** A bound's type widened from its literal (`16` to `number`). */
type Widened<V> = V extends number
  ? number
  : V extends string
    ? string
    : V extends boolean
      ? boolean
      : V
type Writable<T> = { -readonly [K in keyof T]: Widened<T[K]> }

export function withLimits<T extends object>(target: T, values: Partial<Writable<T>>): void {
  const bounds = target as Record<string, unknown>
  const saved: Array<[string, unknown]> = []
  for (const [name, value] of Object.entries(values)) {
    if (!(name in bounds)) throw new Error(`withLimits: no bound named ${name}`)
    saved.push([name, bounds[name]])
    bounds[name] = value
  }
  onTestFinished(() => {
    for (const [name, value] of saved.reverse()) bounds[name] = value
  })
}
