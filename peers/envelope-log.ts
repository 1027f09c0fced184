/**
 * The envelopes a device holds of other writers (the server's, other
 * devices'), so that it can relay them over the LAN unchanged: a peer can
 * verify only what its writer signed, and a device cannot sign for anyone
 * else. Its own writes need no log: it signs them afresh from the document
 * whenever it sends them (peers/signed-link.ts).
 *
 * Kept in the store under `x/`, appended as envelopes arrive and cleared
 * when the replicated document is (a wipe: the full sync that follows
 * brings the server's signed roster). Relaying is best effort — the server
 * is where every write meets — so the log is bounded in bytes (the oldest
 * go first) and written outside the replica's batches: losing its tail to a
 * crash costs a relay, never a write.
 */
import type { Store } from '../core/store.js'
import { limits } from '../core/limits.js'
import { decodeEnvelope, type Certificate } from '../core/signing.js'
import { scanUpdate } from '../core/update-scan.js'

const pad = (n: number): string => n.toString().padStart(15, '0')
const KEYS = {
  entry: (seq: number): string => `x/${pad(seq)}`,
  from: 'x/',
  to: 'x0',
} as const

/**
 * What an answer needs of a logged envelope besides its bytes, read once
 * when it is logged: an answer offers only the envelopes whose writer still
 * stands (peers/signed-link.ts), and decoding every logged envelope again
 * for each answer to learn its writer and certificate cost a LAN answer
 * the time of a full decode of the log.
 */
export interface LoggedHead {
  readonly writer: string
  readonly cert?: Certificate | undefined
}

/** A logged envelope: its bytes and its head. */
export interface LoggedEnvelope extends LoggedHead {
  readonly bytes: Uint8Array
}

interface Entry extends LoggedEnvelope {
  readonly seq: number
  /** Per client: one past the last clock of the envelope's structs. */
  readonly to: ReadonlyMap<number, number>
  /** The relay memo's key of the envelope, when the caller gave it (peers/relay-memo.ts). */
  readonly key?: string | undefined
}

/** A device's log of other writers' envelopes. */
export class EnvelopeLog {
  private entries: Entry[] = []
  /**
   * Per client, the highest end of any entry kept (or dropped since: an
   * upper bound), so that a peer that lacks nothing of the log costs one
   * look per client, not one per entry.
   */
  private reach = new Map<number, number>()
  private bytes = 0
  private nextSeq = 1
  private writes: Promise<void> = Promise.resolve()

  private constructor(private readonly store: Store) {}

  /** Loads the log from `store`. Entries that no longer decode are dropped. */
  static async open(store: Store): Promise<EnvelopeLog> {
    const log = new EnvelopeLog(store)
    for await (const [key, value] of store.range({ gte: KEYS.from, lt: KEYS.to })) {
      const seq = Number(key.slice(KEYS.from.length))
      log.nextSeq = seq + 1
      try {
        log.remember(seq, value, decodeEnvelope(value))
      } catch {
        // Written by a crashed process or an older version: a lost relay only.
      }
    }
    return log
  }

  /**
   * Keeps an envelope whose update brought this peer something new.
   * `opened` is the envelope decoded: its update, writer and certificate;
   * its coverage is read from the update, or given as `to` (one past each
   * client's last clock, from the scan that opened it).
   */
  add(
    envelope: Uint8Array,
    opened: LoggedHead & { readonly update: Uint8Array },
    to?: ReadonlyMap<number, number>,
    key?: string,
  ): string[] {
    const seq = this.nextSeq++
    if (!this.remember(seq, envelope, opened, to, key)) return []
    const dropped = this.trim()
    this.persist([
      { type: 'put', key: KEYS.entry(seq), value: envelope },
      ...dropped.map((e) => ({ type: 'del' as const, key: KEYS.entry(e.seq) })),
    ])
    const keys: string[] = []
    for (const e of dropped) if (e.key !== undefined) keys.push(e.key)
    return keys
  }

  /**
   * The envelopes holding something a peer at `stateVector` lacks, oldest
   * first, with their heads; with `held`, only those whose structs all lie
   * within it (integrated here, not held back for a gap).
   */
  beyond(
    stateVector: ReadonlyMap<number, number>,
    held?: (client: number) => number,
  ): LoggedEnvelope[] {
    const out: LoggedEnvelope[] = []
    let lacks = false
    for (const [client, end] of this.reach)
      if (end > (stateVector.get(client) ?? 0)) {
        lacks = true
        break
      }
    if (!lacks) return out
    for (const entry of this.entries) {
      if (held !== undefined && !within(entry.to, held)) continue
      for (const [client, end] of entry.to) {
        if (end > (stateVector.get(client) ?? 0)) {
          out.push(entry)
          break
        }
      }
    }
    return out
  }

  /** The key of each clientID of the logged envelopes, by its certificate (the latest envelope's). */
  clientKeys(): Map<number, Uint8Array> {
    const out = new Map<number, Uint8Array>()
    for (const entry of this.entries)
      if (entry.cert !== undefined)
        for (const client of entry.to.keys()) out.set(client, entry.cert.publicKey)
    return out
  }

  /** Forgets every envelope (the replicated document was wiped). */
  clear(): void {
    const gone = this.entries.map((e) => e.seq)
    this.entries = []
    this.reach = new Map()
    this.bytes = 0
    if (gone.length > 0)
      this.persist(gone.map((seq) => ({ type: 'del' as const, key: KEYS.entry(seq) })))
  }

  /** Resolves once every write so far has reached the store. */
  flushed(): Promise<void> {
    return this.writes
  }

  private remember(
    seq: number,
    envelope: Uint8Array,
    opened: LoggedHead & { readonly update: Uint8Array },
    scanned?: ReadonlyMap<number, number>,
    key?: string,
  ): boolean {
    let to: ReadonlyMap<number, number>
    try {
      to = scanned ?? scanUpdate(opened.update).to
    } catch {
      return false
    }
    if (to.size === 0) return false
    this.entries.push({ seq, bytes: envelope, to, writer: opened.writer, cert: opened.cert, key })
    for (const [client, end] of to)
      if (end > (this.reach.get(client) ?? 0)) this.reach.set(client, end)
    this.bytes += envelope.byteLength
    return true
  }

  private trim(): Entry[] {
    const dropped: Entry[] = []
    while (this.bytes > limits.envelopeLogBytesMax && this.entries.length > 1) {
      const oldest = this.entries.shift() as Entry
      this.bytes -= oldest.bytes.byteLength
      dropped.push(oldest)
    }
    return dropped
  }

  private persist(ops: Parameters<Store['batch']>[0]): void {
    this.writes = this.writes
      .then(() => this.store.batch(ops))
      .catch(() => {
        // Best effort (see the file comment): a lost entry costs a relay.
      })
  }
}

/** Whether every client's structs up to `to` (one past the last) are within `held`. */
export function within(to: ReadonlyMap<number, number>, held: (client: number) => number): boolean {
  for (const [client, end] of to) if (held(client) < end) return false
  return true
}
