/**
 * The storage port. A peer keeps everything it must not lose (Yjs updates,
 * snapshots, local-only state, the event log) behind this small interface,
 * so that LevelDB in production and memory in tests and the simulator are
 * interchangeable. Every implementation runs `test/contracts/store.contract.ts`.
 *
 * Failures: a backend error rejects with `StorageError` (`STORAGE_FAILED`)
 * and the write did not take effect.
 *
 * Keys are strings ordered by UTF-16 code unit (LevelDB's byte order for ASCII
 * keys, which is all rostersync writes); values are bytes.
 */
export interface Store {
  /**
   * The value under `key`, or `undefined`. The value is a plain `Uint8Array`
   * (never a Buffer) that the caller may keep or modify freely.
   */
  get(key: string): Promise<Uint8Array | undefined>
  /**
   * Stores one value; resolves once it is durable. The store does not keep a
   * reference to `value`: changing it afterwards changes nothing stored.
   */
  put(key: string, value: Uint8Array): Promise<void>
  /** Removes one key (absent keys are fine); resolves once durable. */
  del(key: string): Promise<void>
  /**
   * Applies all operations atomically (all or none) and resolves once they
   * are durable. An empty batch is a no-op.
   */
  batch(ops: readonly StoreOp[]): Promise<void>
  /**
   * Entries with keys in `[gte, lt)`, in key order (or reverse), at most
   * `limit`. Nothing is read until iteration starts; each iteration is a new
   * scan, and leaving it early (`break`) releases what it held.
   */
  range(options: RangeOptions): AsyncIterable<readonly [string, Uint8Array]>
  /**
   * Optional: gives back the space of deleted keys (LevelDB: a compaction
   * of every key), in the backend's own time; reads and writes go on
   * meanwhile, and `close` waits for it. Called after a write that
   * replaced most of what was stored (a new generation, issue 13), so that
   * the old history leaves the disk now rather than whenever the backend
   * gets to it, and the next open does not pay for it. Resolves when done;
   * never rejects (nothing stored depends on it).
   */
  reclaim?(): Promise<void>
  /**
   * Releases the underlying resources; later calls (including scans started
   * later) reject with `STORE_CLOSED`. Closing again is a no-op.
   */
  close(): Promise<void>
}

/** One operation of an atomic {@link Store.batch}. */
export type StoreOp =
  | { readonly type: 'put'; readonly key: string; readonly value: Uint8Array }
  | { readonly type: 'del'; readonly key: string }

/** Bounds of a {@link Store.range} scan. */
export interface RangeOptions {
  readonly gte: string
  readonly lt: string
  readonly limit?: number
  readonly reverse?: boolean
}
