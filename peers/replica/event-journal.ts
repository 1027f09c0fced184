/**
 * The replica's event log and how it is stored: the events of one batch are
 * one value (`e/<first seq>`), and a chunk is deleted once all its events
 * have fallen off the bounded log.
 *
 * Invariant: `chunks` names every stored chunk, oldest first; `pending`
 * holds the events appended since the last chunk was written.
 */
import { decodeValue, encodeValue } from '../../core/codec.js'
import { EventLog, type NewEvent, type RosterEvent } from '../../core/events.js'
import type { Store, StoreOp } from '../../core/store.js'
import { keys, seqOf } from '../storage-keys.js'

/** The event log of one replica and its stored chunks. */
export class EventJournal {
  readonly events: EventLog
  /** Events of the batch being applied, stored with it as one chunk. */
  private pendingEvents: RosterEvent[] = []
  /** Stored event chunks, oldest first: key seq and last event seq. */
  private eventChunks: Array<{ readonly first: number; readonly last: number }> = []

  constructor(eventsMax: number) {
    this.events = new EventLog(eventsMax)
  }

  /** Appends an event at `at` (clock ms); it is stored with the next chunk. */
  append(event: NewEvent, at: number): void {
    this.pendingEvents.push(this.events.append(event, at).event)
  }

  /**
   * Loads the journal while `work` runs (its own key range: read while the
   * snapshot is, at 1M users most of a second the thread only waits on
   * LevelDB), then `install`s work's value. Once both reads are done:
   * rejects with work's failure (nothing installed), else installs, then
   * rejects with the journal's failure if it failed (as when it was read
   * after the install: a rollback still puts the durable document back).
   */
  async loadBeside<T>(
    store: Store,
    work: Promise<T>,
    install: (value: T) => Promise<void>,
  ): Promise<void> {
    const [value, loaded] = await Promise.allSettled([work, this.load(store)])
    if (value.status === 'rejected') throw value.reason
    await install(value.value)
    if (loaded.status === 'rejected') throw loaded.reason
  }

  /** Loads the stored chunks into the log. */
  async load(store: Store): Promise<void> {
    const events: RosterEvent[] = []
    this.eventChunks = []
    this.pendingEvents = []
    for await (const [key, value] of store.range({ gte: keys.eventsFrom, lt: keys.eventsTo })) {
      const chunk = decodeValue(value) as RosterEvent[]
      const last = chunk.at(-1)
      if (last === undefined) continue
      events.push(...chunk)
      this.eventChunks.push({ first: seqOf(key), last: last.seq })
    }
    this.events.restore(events)
  }

  /**
   * Events of one batch are stored as one value (`e/<first seq>`): one key
   * per event made bulk enrolment spend half its time in the store. A chunk
   * is deleted once all its events have fallen off the bounded log.
   */
  writeEventChunk(storeOps: StoreOp[]): void {
    const chunk = this.pendingEvents
    const first = chunk[0]
    const last = chunk.at(-1)
    this.pendingEvents = []
    if (first !== undefined && last !== undefined) {
      storeOps.push({ type: 'put', key: keys.event(first.seq), value: encodeValue(chunk) })
      this.eventChunks.push({ first: first.seq, last: last.seq })
    }
    const oldest = this.events.firstSeq
    while (this.eventChunks.length > 0 && (this.eventChunks[0]?.last ?? Infinity) < oldest) {
      const gone = this.eventChunks.shift()
      if (gone !== undefined) storeOps.push({ type: 'del', key: keys.event(gone.first) })
    }
  }
}
