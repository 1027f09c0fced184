/**
 * Unit tests of the small pure pieces of core/: the hybrid logical clock,
 * `isVacant`, the event log's bound and query, and the record size limit.
 */
import { durationText } from '../core/duration-text.js'
import { describe, expect, it } from 'vitest'
import { EventLog, type NewEvent } from '../core/events.js'
import { Hlc, stampMs } from '../core/hlc.js'
import { limits } from '../core/limits.js'
import { RecordSchema, recordBytes } from '../core/schema.js'
import { isVacant } from '../core/vacant.js'
import { hasCode } from '../core/errors.js'

describe('Hlc', () => {
  it('issues the wall time (x1000) when it moves forward', () => {
    const hlc = new Hlc()
    expect(hlc.next(5)).toBe(5_000)
    expect(hlc.next(9)).toBe(9_000)
    expect(stampMs(9_000)).toBe(9)
    expect(hlc.peek()).toBe(9_000)
  })

  it('counts up within one millisecond and never runs backwards when the wall clock does', () => {
    const hlc = new Hlc()
    const stamps = [10, 10, 10, 7, 3, 10, 11.9].map((ms) => hlc.next(ms))
    expect(stamps).toEqual([10_000, 10_001, 10_002, 10_003, 10_004, 10_005, 11_000])
    for (let i = 1; i < stamps.length; i++) {
      expect(stamps[i]).toBeGreaterThan(stamps[i - 1] as number)
    }
  })

  it('after observing a stamp from a faster clock, issues stamps above it', () => {
    const hlc = new Hlc()
    hlc.next(100)
    hlc.observe(500_042)
    expect(hlc.peek()).toBe(500_042)
    expect(hlc.next(100)).toBe(500_043)
    expect(stampMs(500_043)).toBe(500)
    // Once the wall clock passes the observed time, it takes over again.
    expect(hlc.next(600)).toBe(600_000)
  })

  it('ignores observed stamps that are older, not integers, or unsafe', () => {
    const hlc = new Hlc(7_000)
    for (const stamp of [6_999, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 60, 7_500.5, -1]) {
      hlc.observe(stamp)
    }
    expect(hlc.peek()).toBe(7_000)
    expect(hlc.next(1)).toBe(7_001)
  })

  it('restarts from a persisted stamp without going back', () => {
    const before = new Hlc()
    before.next(1_000)
    before.next(1_000)
    const after = new Hlc(before.peek())
    expect(after.next(999)).toBe(1_000_002)
  })
})

describe('isVacant', () => {
  it.each([
    ['undefined', undefined],
    ['null', null],
    ['the empty string', ''],
    ['an empty list', []],
    ['an empty byte string', new Uint8Array(0)],
  ])('%s is vacant', (_what, value) => {
    expect(isVacant(value)).toBe(true)
  })

  it.each([
    ['a space', ' '],
    ['zero', 0],
    ['false', false],
    ['a list holding an empty string', ['']],
    ['one byte', new Uint8Array(1)],
    ['an object', {}],
    ['a string', 'x'],
  ])('%s is not vacant', (_what, value) => {
    expect(isVacant(value)).toBe(false)
  })
})

describe('EventLog', () => {
  const update = (userId: string, deviceId?: string): NewEvent => ({
    type: 'user-update-succeeded',
    origin: deviceId === undefined ? 'server' : 'device',
    userId,
    ...(deviceId === undefined ? {} : { deviceId }),
  })

  it('numbers events and keeps at most eventsMax, dropping the oldest', () => {
    const log = new EventLog(3)
    const dropped: number[][] = []
    for (let i = 1; i <= 5; i++) dropped.push(log.append(update(`u${i}`), i * 10).dropped)
    expect(dropped).toEqual([[], [], [], [1], [2]])
    expect(log.size).toBe(3)
    expect(log.query().map((e) => [e.seq, e.at, e.userId])).toEqual([
      [3, 30, 'u3'],
      [4, 40, 'u4'],
      [5, 50, 'u5'],
    ])
  })

  it('restores the newest eventsMax of what it is given and numbers on from there', () => {
    const source = new EventLog(10)
    for (let i = 1; i <= 6; i++) source.append(update(`u${i}`), i)
    const log = new EventLog(4)
    log.restore(source.query())
    expect(log.query().map((e) => e.seq)).toEqual([3, 4, 5, 6])
    expect(log.append(update('u7'), 7).event.seq).toBe(7)
    expect(new EventLog(4).append(update('u1'), 1).event.seq).toBe(1)
  })

  it('filters by type, device, user and period, combined with AND', () => {
    const log = new EventLog()
    log.append(update('u1'), 100)
    log.append(update('u1', 'dev-a'), 200)
    log.append({ type: 'user-deleted-locally', userId: 'u2', deviceId: 'dev-a' }, 300)
    log.append({ type: 'sync-failed', deviceId: 'dev-b', code: 'SYNC_FAILED' }, 400)
    log.append(update('u2', 'dev-b'), 500)
    const seqs = (q: Parameters<EventLog['query']>[0]) => log.query(q).map((e) => e.seq)

    expect(seqs({})).toEqual([1, 2, 3, 4, 5])
    expect(seqs({ type: 'user-update-succeeded' })).toEqual([1, 2, 5])
    expect(seqs({ type: ['sync-failed', 'user-deleted-locally'] })).toEqual([3, 4])
    expect(seqs({ type: [] })).toEqual([])
    expect(seqs({ deviceId: 'dev-a' })).toEqual([2, 3])
    expect(seqs({ userId: 'u2' })).toEqual([3, 5])
    expect(seqs({ since: 200 })).toEqual([2, 3, 4, 5])
    expect(seqs({ until: 300 })).toEqual([1, 2])
    expect(seqs({ since: 200, until: 201 })).toEqual([2])
    expect(seqs({ since: 300, until: 300 })).toEqual([])
    expect(seqs({ deviceId: 'dev-b', userId: 'u2', type: 'user-update-succeeded' })).toEqual([5])
    expect(seqs({ deviceId: 'dev-c' })).toEqual([])
    expect(seqs({ limit: 2 })).toEqual([4, 5])
    expect(seqs({ limit: 2, deviceId: 'dev-a' })).toEqual([2, 3])
  })

  it('drops the oldest without moving every event it keeps, append after append (issue 13)', () => {
    const max = 1_000
    const log = new EventLog(max)
    for (let i = 1; i <= max; i++) log.append(update(`u${i}`), i)
    // Counts the elements the array methods that move or copy a log-sized
    // array touch: with 1,000 events held, taking the oldest off the front
    // at every append moves the other 999 each time.
    let touched = 0
    const methods = ['splice', 'slice', 'shift', 'copyWithin'] as const
    type Method = (this: unknown[], ...args: unknown[]) => unknown
    const originals: Method[] = methods.map(
      (name) => Object.getOwnPropertyDescriptor(Array.prototype, name)?.value as Method,
    )
    methods.forEach((name, i) => {
      const original = originals[i] as Method
      Object.defineProperty(Array.prototype, name, {
        configurable: true,
        writable: true,
        value(this: unknown[], ...args: unknown[]) {
          if (this.length >= max) touched += this.length
          const result: unknown = original.apply(this, args)
          return result
        },
      })
    })
    const appends = 10 * max
    const dropped: number[] = []
    try {
      for (let i = 1; i <= appends; i++) dropped.push(...log.append(update('u'), max + i).dropped)
    } finally {
      methods.forEach((name, i) => {
        Object.defineProperty(Array.prototype, name, {
          configurable: true,
          writable: true,
          value: originals[i],
        })
      })
    }
    expect(touched).toBeLessThanOrEqual(10 * appends)
    expect(dropped).toEqual(Array.from({ length: appends }, (_, i) => i + 1))
    expect(log.size).toBe(max)
    expect(log.firstSeq).toBe(appends + 1)
    expect(log.lastSeq).toBe(appends + max)
    expect(log.query({ limit: 2 }).map((e) => e.seq)).toEqual([appends + max - 1, appends + max])
    expect(log.query({ until: appends + 2 }).map((e) => e.seq)).toEqual([appends + 1])
    expect(log.after(appends + max - 2, 10).map((e) => e.seq)).toEqual([
      appends + max - 1,
      appends + max,
    ])
    expect(log.after(0, 1).map((e) => e.seq)).toEqual([appends + 1])
  })

  it('caps a query at eventsPerQueryMax, newest last', () => {
    const log = new EventLog(limits.eventsPerQueryMax + 5)
    for (let i = 1; i <= limits.eventsPerQueryMax + 5; i++) log.append(update('u'), i)
    const all = log.query({ limit: limits.eventsPerQueryMax * 2 })
    expect(all).toHaveLength(limits.eventsPerQueryMax)
    expect(all[0]?.seq).toBe(6)
    expect(all.at(-1)?.seq).toBe(limits.eventsPerQueryMax + 5)
  })
})

describe('recordBytes', () => {
  it('counts bytes, strings (3 bytes a character), keys and scalars as documented', () => {
    expect(recordBytes({})).toBe(0)
    expect(recordBytes({ photo: new Uint8Array(100) })).toBe('photo'.length + 1 + 100 + 5)
    expect(recordBytes({ name: 'abc' })).toBe('name'.length + 1 + 3 * 3 + 5)
    expect(recordBytes({ n: 1, b: true, z: null })).toBe(3 * (1 + 1 + 9))
    expect(recordBytes({ groups: ['a', 'bc'] })).toBe('groups'.length + 1 + (3 + 5) + (6 + 5))
    expect(recordBytes({ cards: [{ type: 'csn', value: '1' }] })).toBe(
      'cards'.length + 1 + ('type'.length + 1 + 9 + 5) + ('value'.length + 1 + 3 + 5),
    )
    expect(recordBytes({ fingerprints: [new Uint8Array(10), new Uint8Array(20)] })).toBe(
      'fingerprints'.length + 1 + 15 + 25,
    )
  })

  it('is an upper bound of the UTF-8 size of text', () => {
    for (const text of ['ascii', 'é', '日本語', '🙂']) {
      expect(recordBytes({ t: text })).toBeGreaterThanOrEqual(
        Buffer.byteLength(text, 'utf8') + 'tt'.length,
      )
    }
  })
})

describe('the record size limit', () => {
  const schema = new RecordSchema()
  /** Groups of 512-character ids, each costing 512 * 3 + 5 bytes. */
  const groups = (count: number): string[] =>
    Array.from({ length: count }, (_, i) => `${i}`.padEnd(limits.textCharsMax, 'g'))

  it('accepts a record of every field at its own maximum when the total fits', () => {
    const record = {
      id: 'big',
      photo: new Uint8Array(limits.photoBytesMax),
      fingerprints: Array.from(
        { length: limits.fingerprintsPerUserMax },
        () => new Uint8Array(limits.templateBytesMax),
      ),
      faces: Array.from(
        { length: limits.facesPerUserMax },
        () => new Uint8Array(limits.templateBytesMax),
      ),
    }
    const { id: _id, ...fields } = record
    expect(recordBytes(fields)).toBeLessThanOrEqual(limits.recordBytesMax)
    expect(schema.parseRecord(record).fields.photo).toBe(record.photo)
  })

  it('refuses a record whose total passes recordBytesMax although each field is valid', () => {
    // After the photo (262,155 bytes) and the key, each 1,541-byte group counts: 170 fit, 171 do not.
    const base = { photo: new Uint8Array(limits.photoBytesMax) }
    const fits = { ...base, groups: groups(170) }
    const over = { ...base, groups: groups(171) }
    expect(recordBytes(fits)).toBeLessThanOrEqual(limits.recordBytesMax)
    expect(recordBytes(over)).toBeGreaterThan(limits.recordBytesMax)
    expect(schema.parseRecord({ id: 'ok', ...fits }).fields.groups).toHaveLength(170)
    let error: unknown
    try {
      schema.parseRecord({ id: 'too-big', ...over })
    } catch (caught) {
      error = caught
    }
    expect(hasCode(error, 'INVALID_RECORD')).toBe(true)
    expect((error as Error).message).toContain(String(limits.recordBytesMax))
  })
})

describe('durationText', () => {
  it('says a duration in the largest unit it reaches, to one decimal', () => {
    expect(durationText(864_000_000)).toBe('10 days')
    expect(durationText(129_600_000)).toBe('1.5 days')
    expect(durationText(3_600_000)).toBe('1 hour')
    expect(durationText(90_000)).toBe('1.5 minutes')
    expect(durationText(45_000)).toBe('45 seconds')
    expect(durationText(500)).toBe('0.5 seconds')
  })
})
