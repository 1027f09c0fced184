/**
 * Fault injection for tests: a {@link Store} wrapper whose writes can be made
 * to fail on demand, so that tests can check that a storage failure surfaces
 * as `STORAGE_FAILED` and leaves nothing half-applied.
 */
import { InvalidOptionsError, StorageError } from '../core/errors.js'
import type { RangeOptions, Store, StoreOp } from '../core/store.js'

/**
 * Wraps another {@link Store}. Reads always pass through; writes (`put`,
 * `del`, `batch`) pass through unless a fault is armed, in which case they
 * reject with `StorageError('injected fault')` without reaching the inner
 * store, exactly like a backend write that failed before taking effect.
 */
export class FaultyStore implements Store {
  readonly #inner: Store
  #failNext = 0
  #failAll = false
  #closed = false
  #injected = 0

  constructor(inner: Store) {
    this.#inner = inner
  }

  /** How many writes have been failed on purpose so far. */
  get faultsInjected(): number {
    return this.#injected
  }

  /** Makes the next `n` writes fail (on top of any already armed). */
  failNext(n = 1): void {
    if (!Number.isInteger(n) || n < 0) {
      throw new InvalidOptionsError(`failNext expects a non-negative integer, got ${n}`)
    }
    this.#failNext += n
  }

  /** While `on`, every write fails; `failAll(false)` also disarms any `failNext`. */
  failAll(on: boolean): void {
    this.#failAll = on
    if (!on) this.#failNext = 0
  }

  get(key: string): Promise<Uint8Array | undefined> {
    return this.#inner.get(key)
  }

  put(key: string, value: Uint8Array): Promise<void> {
    return this.#write(`put of key ${JSON.stringify(key)}`, () => this.#inner.put(key, value))
  }

  del(key: string): Promise<void> {
    return this.#write(`del of key ${JSON.stringify(key)}`, () => this.#inner.del(key))
  }

  batch(ops: readonly StoreOp[]): Promise<void> {
    return this.#write(`batch of ${ops.length} ops`, () => this.#inner.batch(ops))
  }

  range(options: RangeOptions): AsyncIterable<readonly [string, Uint8Array]> {
    return this.#inner.range(options)
  }

  close(): Promise<void> {
    this.#closed = true
    return this.#inner.close()
  }

  async #write(what: string, apply: () => Promise<void>): Promise<void> {
    // After close the inner store's STORE_CLOSED is the truthful answer, and
    // an armed fault should still be there for whatever the test does next.
    if (!this.#closed && this.#takeFault()) {
      throw new StorageError(`injected fault (${what})`)
    }
    return apply()
  }

  #takeFault(): boolean {
    if (this.#failAll) {
      this.#injected++
      return true
    }
    if (this.#failNext === 0) return false
    this.#failNext--
    this.#injected++
    return true
  }
}
