/**
 * A Store that passes every call to another: tests subclass it to change one
 * thing (count writes, hold batches, stay open when its peer closes it).
 */
import type { RangeOptions, Store, StoreOp } from '../../core/store.js'

export class ForwardingStore implements Store {
  constructor(readonly inner: Store) {}
  get(key: string): Promise<Uint8Array | undefined> {
    return this.inner.get(key)
  }
  put(key: string, value: Uint8Array): Promise<void> {
    return this.inner.put(key, value)
  }
  del(key: string): Promise<void> {
    return this.inner.del(key)
  }
  batch(ops: readonly StoreOp[]): Promise<void> {
    return this.inner.batch(ops)
  }
  range(options: RangeOptions): AsyncIterable<readonly [string, Uint8Array]> {
    return this.inner.range(options)
  }
  close(): Promise<void> {
    return this.inner.close()
  }
}

/** A store that stays open when its peer closes it, so the next peer can reopen the same data. */
export class KeptOpenStore extends ForwardingStore {
  override async close(): Promise<void> {}
}
