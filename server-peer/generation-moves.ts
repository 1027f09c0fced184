/**
 * The server's cap on devices fetching a new generation at once (issue 13):
 * after a switch every device comes back and fetches the whole roster
 * (its move), spread by hash(device id) over `generationMoveSpreadMs`;
 * this bounds how many such fetches the server serves together,
 * whatever the spread does (a site of many devices, a spread made short,
 * devices that were offline and come back together).
 *
 * For a while after a switch (twice the spread), a device link holds a
 * place when its device is one that moves: admitted (its join proven, so
 * no one holds a place under another device's id), registered before the
 * switch, and not seen on the new generation yet. A device first seen
 * after the switch has nothing to move: its first full sync is the one
 * any new device makes, as outside the window. The place is held from the
 * admission until the server's answer to its first step 1 ends (its last
 * part, a step 2, is handed to the link: the whole roster for a device
 * that moves, a few bytes for one that holds the generation already), or
 * until the link closes, or until `generationMoveStep1WaitMs` passed
 * without its step 1: it is closed (1013). An answer not handed whole
 * within `generationMoveStep1WaitMs` of its step 1 (a link that does not
 * read: a probe's 16 ids held every place all window so) lets its place
 * go, counted against its device's wait as a step 1's would be, and goes
 * on without it: a slow honest device still moves. That wait is per device over
 * the window: its links' times in places without a step 1 add up, and
 * once they reach it its id takes no place again until the window ends (a
 * device sends its step 1 right after the hello: ids that idle, or close
 * and join again, cannot take turns holding the places). Past
 * `netLimits.generationMovesInFlightMax` places, a link is closed before
 * anything is sent on it (no hello: the device stages nothing) with 1013
 * `TOO_MANY_MOVES`; a device retries after its usual backoff
 * (`retryDelayMs`, growing from `retryDelayMsMin`).
 *
 * Transport-independent: the endpoint hands it the admitted connection,
 * and it peeks only at a message's first two bytes.
 */
import type { Clock } from '../core/clock.js'
import type { Generation } from '../core/generation-statement.js'
import { excerpt } from '../core/errors.js'
import { netLimits } from '../core/limits.js'
import { CloseCode, MessageType, SignedType, SyncType } from '../core/protocol.js'
import type { CloseInfo, Connection } from '../core/transport.js'

/** What the gate reads of the server. */
export interface MoveGateOptions {
  readonly clock: Clock
  /** The generation the site is on, and when it started (undefined: never switched). */
  readonly generation: () => (Generation & { readonly at: number }) | undefined
  /** When the server first registered `deviceId` (undefined: it does not know it). */
  readonly firstSeen: (deviceId: string) => number | undefined
}

/** Devices fetching the new generation, capped. */
export class MoveGate {
  /** The generation the sets below are about. */
  private generationId = ''
  /** Devices seen holding the current generation. */
  private readonly moved = new Set<string>()
  /** Links holding a place: connection id -> device id. */
  private readonly inFlight = new Map<string, string>()
  /**
   * Per device, how long its links held places without a step 1 this
   * window, ms; at `generationMoveStep1WaitMs` it takes no place again.
   */
  private readonly idleMs = new Map<string, number>()
  constructor(private readonly options: MoveGateOptions) {}

  /**
   * `connection` (the link of admitted device `deviceId`), wrapped to
   * follow its move when it takes a place; undefined when it may not fetch
   * now: it is closed then (1013 `TOO_MANY_MOVES`), nothing sent on it.
   */
  admit(connection: Connection, deviceId: string): Connection | undefined {
    const generation = this.options.generation()
    // Past the window, or a switch stamped ahead of the clock (set back
    // since): the window's end is unknown, no one is held back.
    const age = generation === undefined ? Infinity : this.options.clock.now() - generation.at
    if (generation === undefined || age < 0 || age >= 2 * netLimits.generationMoveSpreadMs)
      return connection
    this.follow(generation)
    const firstSeen = this.options.firstSeen(deviceId)
    // Seen on the new generation, or new since the switch: nothing to move.
    if (this.moved.has(deviceId) || firstSeen === undefined || firstSeen > generation.at)
      return connection
    if ((this.idleMs.get(deviceId) ?? 0) >= netLimits.generationMoveStep1WaitMs) {
      const windowEnd = generation.at + 2 * netLimits.generationMoveSpreadMs
      const seconds = Math.ceil((windowEnd - this.options.clock.now()) / 1000)
      connection.close(
        CloseCode.tryAgainLater,
        `TOO_MANY_MOVES: ${excerpt(deviceId)} held a place and sent no step 1; it may fetch generation ${generation.n} in ${seconds} s`,
      )
      return undefined
    }
    if (this.inFlight.size >= netLimits.generationMovesInFlightMax) {
      connection.close(
        CloseCode.tryAgainLater,
        `TOO_MANY_MOVES: ${netLimits.generationMovesInFlightMax} devices are fetching generation ${generation.n}; retry later`,
      )
      return undefined
    }
    this.inFlight.set(connection.id, deviceId)
    return this.wrap(connection, generation.id, deviceId)
  }

  /** Starts over for a generation it did not follow yet. */
  private follow(generation: Generation): void {
    if (generation.id === this.generationId) return
    this.generationId = generation.id
    this.moved.clear()
    this.inFlight.clear()
    this.idleMs.clear()
  }

  /**
   * Frees the link's place: `moved`, its device holds the generation;
   * `waitedMs`, how long it held it without a step 1 (counted against its
   * device: `generationMoveStep1WaitMs` in all, and no place again).
   */
  private release(
    connectionId: string,
    generationId: string,
    outcome: 'moved' | 'closed',
    waitedMs: number,
  ): void {
    const deviceId = this.inFlight.get(connectionId)
    if (deviceId === undefined || generationId !== this.generationId) return
    this.inFlight.delete(connectionId)
    if (outcome === 'moved') this.moved.add(deviceId)
    if (waitedMs <= 0) return
    this.idleMs.set(deviceId, (this.idleMs.get(deviceId) ?? 0) + waitedMs)
  }

  /** `connection`, its place freed as its move goes. */
  private wrap(connection: Connection, generationId: string, deviceId: string): Connection {
    /** `step1`: waits for the device's step 1; `answer`: for the end of the answer; `done`. */
    let phase: 'step1' | 'answer' | 'done' = 'step1'
    const { clock } = this.options
    const placed = clock.now()
    // A link that sends no step 1 gives its place back, closed. The wait is
    // what is left of its device's: links that close before their step 1
    // and join again cannot take turns holding a place all window (review),
    // and a device that crashed once in its move still moves.
    const waitMs = netLimits.generationMoveStep1WaitMs - (this.idleMs.get(deviceId) ?? 0)
    const idle = clock.setTimeout(
      () => {
        if (phase !== 'step1') return
        release('closed')
        connection.close(
          CloseCode.tryAgainLater,
          `TOO_MANY_MOVES: no step 1 within ${netLimits.generationMoveStep1WaitMs} ms of a place; retry later`,
        )
      },
      Math.max(0, waitMs),
    )
    /** The answer's bound, once its step 1 came (see the module comment). */
    let answering: unknown
    /** The answer outlived its bound: its place went, its step 2 is still to come. */
    let late = false
    const release = (outcome: 'moved' | 'closed', waitedMs?: number): void => {
      if (phase === 'done') return
      const waited = waitedMs ?? (phase === 'step1' ? Math.max(1, clock.now() - placed) : 0)
      phase = 'done'
      clock.clearTimeout(idle)
      clock.clearTimeout(answering)
      this.release(connection.id, generationId, outcome, waited)
    }
    let closeHandler: ((info: CloseInfo) => void) | undefined
    connection.onClose((info) => {
      release('closed')
      closeHandler?.(info)
    })
    const wrapped: Connection = {
      id: connection.id,
      remote: connection.remote,
      get open() {
        return connection.open
      },
      get bufferedBytes() {
        return connection.bufferedBytes
      },
      send: (message) => {
        connection.send(message)
        if (phase === 'answer' && isStep2(message)) release('moved')
        // An answer handed whole after its place went: moved all the same.
        else if (late && isStep2(message) && generationId === this.generationId) {
          late = false
          this.moved.add(deviceId)
        }
      },
      onMessage: (handler) => {
        connection.onMessage((message) => {
          if (
            phase === 'step1' &&
            message[0] === MessageType.sync &&
            message[1] === SyncType.step1
          ) {
            phase = 'answer'
            clock.clearTimeout(idle)
            answering = clock.setTimeout(() => {
              release('closed', netLimits.generationMoveStep1WaitMs)
              late = true
            }, netLimits.generationMoveStep1WaitMs)
          }
          handler(message)
        })
      },
      onClose: (handler) => {
        closeHandler = handler
      },
      close: (code, reason) => {
        release('closed')
        connection.close(code, reason)
      },
    }
    if (connection.limitMessageBytes !== undefined)
      wrapped.limitMessageBytes = (max) => connection.limitMessageBytes?.(max)
    if (connection.pauseReading !== undefined)
      wrapped.pauseReading = () => connection.pauseReading?.()
    if (connection.resumeReading !== undefined)
      wrapped.resumeReading = () => connection.resumeReading?.()
    return wrapped
  }
}

/** Whether `message` is the last part of an answer (a step 2, plain or signed). */
function isStep2(message: Uint8Array): boolean {
  return (
    (message[0] === MessageType.sync && message[1] === SyncType.step2) ||
    (message[0] === MessageType.signed && message[1] === SignedType.step2)
  )
}
