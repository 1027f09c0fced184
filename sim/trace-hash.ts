/**
 * A cheap running hash (two 32-bit FNV-style lanes) for traces: the same
 * sequence of numbers, strings and bytes always gives the same hex string.
 * Not cryptographic; it only has to tell two runs apart.
 */
export class TraceHash {
  #a = 0x811c9dc5
  #b = 0x9747b28c

  /** Mixes in a number (its low 32 bits and, for large ones, the next 21). */
  number(value: number): this {
    this.#mix(value | 0)
    if (value > 0xffff_ffff || value < -0x8000_0000) this.#mix(Math.floor(value / 0x1_0000_0000))
    return this
  }

  /** Mixes in a string, code unit by code unit. */
  text(value: string): this {
    for (let i = 0; i < value.length; i++) this.#mix(value.charCodeAt(i))
    this.#mix(value.length)
    return this
  }

  /** Mixes in bytes. */
  bytes(value: Uint8Array): this {
    let a = this.#a
    let b = this.#b
    for (let i = 0; i < value.length; i++) {
      const c = value[i] as number
      a = Math.imul(a ^ c, 0x01000193)
      b = Math.imul(b ^ c, 0x5bd1e995) ^ (b >>> 15)
    }
    this.#a = a
    this.#b = b
    this.#mix(value.length)
    return this
  }

  /** The hash so far, 16 hex digits. */
  hex(): string {
    return (
      (this.#a >>> 0).toString(16).padStart(8, '0') + (this.#b >>> 0).toString(16).padStart(8, '0')
    )
  }

  #mix(c: number): void {
    this.#a = Math.imul(this.#a ^ c, 0x01000193)
    this.#b = Math.imul(this.#b ^ c, 0x5bd1e995) ^ (this.#b >>> 15)
  }
}
