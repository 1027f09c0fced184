/**
 * Live updates for the admin page (`GET /api/stream`, server-sent events):
 * `devices` messages carry the device records that changed (a join, a sync
 * direction, a revocation), `events` messages the events appended to the
 * log, each with its seq as the message id, so a reconnecting browser
 * (`Last-Event-ID`) gets what it missed. One poll every
 * `netLimits.adminStreamPollMs` serves every open stream, and only while
 * one is open: device records are compared by identity (the registry
 * replaces a record on every change) and events are read after the last
 * seq sent, so an idle site costs next to nothing; device changes go out
 * at most once per `adminStreamDevicesIntervalMs`. Bounded: at most
 * `adminStreamsMax` streams; a stream whose client does not read is closed;
 * a comment line every `adminStreamHeartbeatMs` keeps idle ones alive.
 * Wall-clock timers on purpose: they serve real sockets.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { TooManyStreamsError } from '../core/errors.js'
import type { EventLog, RosterEvent } from '../core/events.js'
import { netLimits } from '../core/limits.js'
import type { DeviceRecord } from './device-registry.js'

/** Bytes a stream may have waiting for a slow client before it is closed. */
export const STREAM_BUFFER_BYTES_MAX = 8 * 1024 * 1024

/** What the streams watch. */
export interface StreamSource {
  readonly events: EventLog
  readonly devices: {
    /** Grows whenever a record changes. */
    readonly changes: number
    list(): DeviceRecord[]
  }
}

interface Stream {
  readonly res: ServerResponse
  lastWriteAt: number
  /** False once what authorised the stream ended (sign-out, session expiry). */
  readonly live: () => boolean
}

/** The open live update streams (see the module comment). */
export class AdminStreams {
  private readonly streams = new Set<Stream>()
  private timer: ReturnType<typeof setInterval> | undefined
  private deviceChanges = -1
  private deviceRecords = new Map<string, DeviceRecord>()
  private devicesSentAt = 0
  private lastSeq = 0
  private closed = false

  constructor(private readonly source: StreamSource) {}

  /** Number of open streams. */
  get size(): number {
    return this.streams.size
  }

  /**
   * Opens a stream on an authenticated request: the current device list
   * first, then changes. `TOO_MANY_STREAMS` past the limit. `live` says
   * whether what authorised it still holds (a session cookie's session):
   * the stream ends at the first poll after it does not.
   */
  open(req: IncomingMessage, res: ServerResponse, live: () => boolean = () => true): void {
    if (this.closed || this.streams.size >= netLimits.adminStreamsMax)
      throw new TooManyStreamsError(netLimits.adminStreamsMax)
    if (this.streams.size === 0) this.start()
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      connection: 'keep-alive',
      'x-content-type-options': 'nosniff',
    })
    const stream: Stream = { res, lastWriteAt: Date.now(), live }
    this.streams.add(stream)
    const drop = (): void => {
      this.streams.delete(stream)
      if (this.streams.size === 0) this.stop()
    }
    res.on('close', drop)
    req.on('error', drop)
    this.write(stream, `retry: 2000\n\n`)
    this.write(stream, message('devices', this.source.devices.list()))
    // A browser reconnecting says what it saw last: it gets what followed.
    const seen = Number(req.headers['last-event-id'])
    if (Number.isSafeInteger(seen) && seen >= 0 && seen < this.lastSeq)
      this.sendEvents(
        stream,
        this.source.events.after(
          seen,
          Math.min(this.lastSeq - seen, netLimits.adminStreamEventsPerMessageMax),
        ),
      )
  }

  /** Ends every stream and stops polling (the server is closing). */
  close(): void {
    this.closed = true
    this.stop()
    for (const stream of this.streams) stream.res.end()
    this.streams.clear()
  }

  private start(): void {
    this.deviceChanges = this.source.devices.changes
    this.deviceRecords = new Map(this.source.devices.list().map((d) => [d.id, d]))
    this.lastSeq = this.source.events.lastSeq
    this.timer = setInterval(() => this.poll(), netLimits.adminStreamPollMs)
    this.timer.unref()
  }

  private stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer)
    this.timer = undefined
  }

  private poll(): void {
    const changed = this.changedDevices()
    const events = this.source.events.after(this.lastSeq, netLimits.adminStreamEventsPerMessageMax)
    const last = events.at(-1)
    if (last !== undefined) this.lastSeq = last.seq
    const now = Date.now()
    for (const stream of [...this.streams]) {
      if (!stream.live()) {
        // Signed out, or the session expired: nothing more goes to it.
        this.streams.delete(stream)
        stream.res.end()
        if (this.streams.size === 0) this.stop()
        continue
      }
      if (changed.length > 0) this.write(stream, message('devices', changed))
      if (events.length > 0) this.sendEvents(stream, events)
      if (now - stream.lastWriteAt >= netLimits.adminStreamHeartbeatMs)
        this.write(stream, ': heartbeat\n\n')
    }
  }

  private changedDevices(): Array<DeviceRecord | Forgotten> {
    const changes = this.source.devices.changes
    if (changes === this.deviceChanges) return []
    const now = Date.now()
    if (now - this.devicesSentAt < netLimits.adminStreamDevicesIntervalMs) return []
    this.devicesSentAt = now
    this.deviceChanges = changes
    const changed: Array<DeviceRecord | Forgotten> = []
    const records = new Map<string, DeviceRecord>()
    for (const record of this.source.devices.list()) {
      records.set(record.id, record)
      if (this.deviceRecords.get(record.id) !== record) changed.push(record)
    }
    // A device forgotten since: the page drops its row (it kept showing it,
    // every action on it PEER_UNKNOWN: an operator probe).
    for (const id of this.deviceRecords.keys())
      if (!records.has(id)) changed.push({ id, forgotten: true })
    this.deviceRecords = records
    return changed
  }

  private sendEvents(stream: Stream, events: readonly RosterEvent[]): void {
    const last = events.at(-1)
    if (last !== undefined) this.write(stream, message('events', events, last.seq))
  }

  private write(stream: Stream, text: string): void {
    const { res } = stream
    if (res.writableEnded || res.destroyed) return
    // A client that does not read is not buffered for without end.
    if (res.writableLength > STREAM_BUFFER_BYTES_MAX) {
      res.destroy()
      return
    }
    res.write(text)
    stream.lastWriteAt = Date.now()
  }
}

/** A device the registry no longer holds, in a `devices` message. */
interface Forgotten {
  readonly id: string
  readonly forgotten: true
}

/** One server-sent event: its type, JSON data and optional id. */
function message(type: string, data: unknown, id?: number): string {
  return `event: ${type}\n${id === undefined ? '' : `id: ${id}\n`}data: ${JSON.stringify(data)}\n\n`
}
