/**
 * The simulator's own seeded random source: sfc32 (Chris Doty-Humphrey's
 * small fast chaotic generator, 128 bits of state) seeded through splitmix32.
 * Ours rather than a library's so that a seed replays the same run on every
 * Node version, and with `fork` so that every consumer (a link direction, a
 * peer, the workload) draws from its own stream: adding a consumer, or
 * drawing more from one, never shifts what another one sees.
 */
import { InvalidOptionsError } from '../core/errors.js'

/** 2^32, to turn a 32-bit integer into a float in [0, 1). */
const UINT32_RANGE = 0x1_0000_0000

/** Draws discarded after seeding, so that close seeds give unrelated streams. */
const WARMUP_DRAWS = 12

/** murmur3's 32-bit finaliser: every input bit affects every output bit. */
function fmix32(value: number): number {
  let h = value | 0
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b)
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35)
  return (h ^ (h >>> 16)) >>> 0
}

/**
 * The seed of the child stream `label` of the stream seeded with `seed`: a
 * hash of both, so that it depends on the parent's seed only (never on how
 * much the parent has drawn).
 */
function childSeed(seed: number, label: string): number {
  let h = fmix32(seed ^ 0x5bd1e995)
  for (let i = 0; i < label.length; i++) {
    h = Math.imul(h ^ label.charCodeAt(i), 0x01000193)
  }
  return fmix32(h ^ label.length)
}

/**
 * A deterministic pseudo-random stream. Not for cryptography: it exists so
 * that a simulation is a pure function of its seed.
 */
export class Prng {
  /** The 32-bit seed this stream started from (what a replay command prints). */
  readonly seed: number
  #a: number
  #b: number
  #c: number
  #d: number

  /** A stream seeded with the integer `seed` (taken modulo 2^32). */
  constructor(seed: number) {
    if (!Number.isSafeInteger(seed)) {
      throw new InvalidOptionsError(`a PRNG seed must be an integer, got ${seed}`)
    }
    this.seed = seed >>> 0
    // splitmix32 spreads one 32-bit seed over sfc32's four state words.
    // sfc32 has no bad states to avoid: its counter word `d` guarantees a
    // period of at least 2^32 from any state.
    let s = this.seed
    const splitmix = (): number => {
      s = (s + 0x9e3779b9) | 0
      return fmix32(s)
    }
    this.#a = splitmix()
    this.#b = splitmix()
    this.#c = splitmix()
    this.#d = splitmix()
    for (let i = 0; i < WARMUP_DRAWS; i++) this.nextUint32()
  }

  /** The next uniform integer in [0, 2^32). */
  nextUint32(): number {
    const a = this.#a
    const b = this.#b
    const c = this.#c
    const t = (((a + b) | 0) + this.#d) | 0
    this.#d = (this.#d + 1) | 0
    this.#a = b ^ (b >>> 9)
    this.#b = (c + (c << 3)) | 0
    this.#c = (((c << 21) | (c >>> 11) | 0) + t) | 0
    return t >>> 0
  }

  /** The next uniform float in [0, 1) (32 bits of randomness). */
  next(): number {
    return this.nextUint32() / UINT32_RANGE
  }

  /**
   * A uniform integer in [lo, hi], both inclusive: one draw when the range
   * spans at most 2^32 values, else two (53 bits: a run of 50 days and
   * more spans past 2^32 ms, and `--days 50` was refused as a bug).
   */
  int(lo: number, hi: number): number {
    if (!Number.isSafeInteger(lo) || !Number.isSafeInteger(hi) || hi < lo) {
      throw new InvalidOptionsError(`int(lo, hi) needs integers with lo <= hi, got ${lo}, ${hi}`)
    }
    const span = hi - lo + 1
    if (span <= UINT32_RANGE) return lo + Math.floor(this.next() * span)
    const high = this.nextUint32() >>> 5
    const low = this.nextUint32() >>> 6
    return Math.min(hi, lo + Math.floor(((high * 2 ** 26 + low) / 2 ** 53) * span))
  }

  /** A uniform element of `items` (one draw); throws on an empty array. */
  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new InvalidOptionsError('pick() from an empty array')
    return items[this.int(0, items.length - 1)] as T
  }

  /**
   * True with probability `p` (0 or less: never; 1 or more: always). Always one draw, whatever
   * `p` is, so that changing a rate does not shift the rest of the stream.
   */
  chance(p: number): boolean {
    return this.next() < p
  }

  /** Shuffles `items` in place (Fisher-Yates, `length - 1` draws) and returns it. */
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.int(0, i)
      const swap = items[i] as T
      items[i] = items[j] as T
      items[j] = swap
    }
    return items
  }

  /**
   * An independent child stream named `label`. It depends only on this
   * stream's seed and the label: forking draws nothing from this stream, and
   * the same label always gives the same child.
   */
  fork(label: string): Prng {
    return new Prng(childSeed(this.seed, label))
  }
}
