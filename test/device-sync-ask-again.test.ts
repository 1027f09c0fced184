/**
 * A lost answer on a live connection (PROTOCOL.md, "Acknowledgement"): the
 * device that heard nothing for `netLimits.syncAskAgainSilenceMs` sends its
 * step 1 again on the same connection, and the sync completes without a
 * reconnection (no new join, no new hello). Without any answer within
 * `netLimits.syncAnswerTimeoutMs` the link still reconnects. The messages
 * are lost by a connection wrapper between the device and a real server
 * over in-memory links; time is a manual clock. And an answer whose step 2
 * overtakes its step 1 (a reordering network) still completes the request.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { netLimits } from '../core/limits.js'
import type { Connection, Transport } from '../core/transport.js'
import { ManualClock, settle } from './helpers/manual-clock.js'
import { operationsOf } from './helpers/operations.js'
import { memorySite, type MemorySite } from './helpers/memory-site.js'

const sites: MemorySite[] = []
afterEach(async () => {
  for (const s of sites.splice(0).reverse()) await s.close()
})

/** Whether an inbound message is part of an answer (the server's step 1 or step 2). */
function isAnswer(message: Uint8Array): boolean {
  const type = message[0]
  const sub = message[1]
  return (type === 0 && (sub === 0 || sub === 1)) || (type === 101 && sub === 1)
}

/**
 * The site, a device in periodic mode on it, and a count of its
 * connections; `lose(n)` drops everything of the server's next `n` answers;
 * `loseStep2s(n)` drops only the step 2 of the next `n`; `swap(n)`
 * delivers the step 1 of the server's next `n` answers after their step 2;
 * `asked()` counts the step 1s the device sent.
 */
async function lossySite(): Promise<{
  clock: ManualClock
  site: MemorySite
  connects: () => number
  lose: (answers: number) => void
  loseStep2s: (answers: number) => void
  asked: () => number
  swap: (answers: number) => void
  device: Awaited<ReturnType<MemorySite['device']>>
}> {
  const clock = new ManualClock()
  const site = await memorySite(clock)
  sites.push(site)
  let connects = 0
  let losing = 0
  let losingStep2s = 0
  let asked = 0
  let swapping = 0
  let held: Uint8Array | undefined
  const wrap = (conn: Connection): Connection => ({
    get id() {
      return conn.id
    },
    get remote() {
      return conn.remote
    },
    get open() {
      return conn.open
    },
    send: (message) => {
      if (message[0] === 0 && message[1] === 0) asked++
      conn.send(message)
    },
    onMessage: (handler) =>
      conn.onMessage((message) => {
        if (losing > 0 && isAnswer(message)) {
          // The step 2 (the answer's last message) ends one lost answer.
          if (message[1] === 1) losing--
          return
        }
        if (losingStep2s > 0 && isAnswer(message) && message[1] === 1) {
          losingStep2s--
          return
        }
        if (swapping > 0 && message[0] === 0 && message[1] === 0) {
          held = message
          return
        }
        handler(message)
        if (held !== undefined && isAnswer(message) && message[1] === 1) {
          swapping--
          const step1 = held
          held = undefined
          handler(step1)
        }
      }),
    onClose: (handler) => conn.onClose(handler),
    close: (code, reason) => conn.close(code, reason),
  })
  const transport: Transport = {
    connect: async (url) => {
      connects++
      return wrap(await site.transport.connect(url))
    },
    close: async () => undefined,
  }
  const device = await site.device('D1', clock, { mode: 'periodic', serverTransport: transport })
  await device.sync.whenIdle()
  return {
    clock,
    site,
    connects: () => connects,
    lose: (answers) => {
      losing = answers
    },
    loseStep2s: (answers) => {
      losingStep2s = answers
    },
    asked: () => asked,
    swap: (answers) => {
      swapping = answers
    },
    device,
  }
}

describe('a lost answer on a live connection', () => {
  it('is asked for again on the same connection: the sync completes without reconnecting', async () => {
    const { clock, site, connects, lose, device } = await lossySite()
    expect(connects()).toBe(1)
    await device.users.put({ id: 'u1', name: 'Ann' })
    // The answer and the first answer asked again are lost.
    lose(2)
    let done = false
    const delta = device.sync.delta().then(() => {
      done = true
    })
    await settle()
    expect(done).toBe(false)
    // Silence for the whole interval: the step 1 goes again, each time.
    await clock.advance(netLimits.syncAskAgainSilenceMs)
    await settle()
    expect(done).toBe(false)
    await clock.advance(netLimits.syncAskAgainSilenceMs)
    await settle()
    expect(done).toBe(true)
    await delta
    expect(connects()).toBe(1)
    expect(device.sync.status().deviceToServer.state).toBe('success')
    expect(site.server.users.get('u1')).toMatchObject({ id: 'u1', name: 'Ann' })
  })

  it('is not asked for again while the silence lasts less than the interval', async () => {
    const { clock, connects, lose, device } = await lossySite()
    await device.users.put({ id: 'u1', name: 'Ann' })
    lose(1)
    let done = false
    const delta = device.sync.delta().then(() => {
      done = true
    })
    await clock.advance(netLimits.syncAskAgainSilenceMs - 1)
    await settle()
    expect(done).toBe(false)
    await clock.advance(1)
    await settle()
    expect(done).toBe(true)
    await delta
    expect(connects()).toBe(1)
  })

  it('is asked for again once only when its step 1 came (the rest may be a large answer on its way)', async () => {
    const { clock, site, connects, loseStep2s, asked, device } = await lossySite()
    await device.users.put({ id: 'u1', name: 'Ann' })
    loseStep2s(Number.POSITIVE_INFINITY)
    const before = asked()
    const delta = device.sync.delta().catch((error: unknown) => error)
    await settle()
    expect(asked()).toBe(before + 1)
    await clock.advance(netLimits.syncAnswerTimeoutMs - 1)
    // The request, and one step 1 again: its answer began too, and stays silent.
    expect(asked()).toBe(before + 2)
    expect(connects()).toBe(1)
    loseStep2s(0)
    // The bound grows by what the answer brings, as the server's step 1
    // states it (at most every operation of the server's document).
    await clock.advance(
      1 + operationsOf(site.server.replica.doc) * netLimits.syncAnswerMsPerOperation,
    )
    expect(await delta).toMatchObject({ code: 'SYNC_TIMEOUT' })
  })

  it('still reconnects when no answer comes within the answer timeout', async () => {
    const { clock, connects, lose, device } = await lossySite()
    await device.users.put({ id: 'u1', name: 'Ann' })
    // Every answer on this connection is lost, the asked-again ones too.
    lose(Number.POSITIVE_INFINITY)
    const delta = device.sync.delta().catch((error: unknown) => error)
    await clock.advance(netLimits.syncAnswerTimeoutMs - 1)
    expect(connects()).toBe(1)
    lose(0)
    await clock.advance(1)
    expect(await delta).toMatchObject({ code: 'SYNC_TIMEOUT' })
    await settle()
    expect(connects()).toBe(2)
  })
})

describe('an answer whose step 2 overtakes its step 1', () => {
  it('completes the request when the step 1 arrives, with no wait', async () => {
    const { site, connects, swap, device } = await lossySite()
    await device.users.put({ id: 'u2', name: 'Bob' })
    swap(2)
    let done = false
    // No virtual time passes: only the messages' own order changed.
    const delta = device.sync.delta().then(() => {
      done = true
    })
    await settle(20)
    expect(done).toBe(true)
    await delta
    expect(connects()).toBe(1)
    expect(device.sync.status().deviceToServer.state).toBe('success')
    expect(site.server.users.get('u2')).toMatchObject({ id: 'u2', name: 'Bob' })
  })
})
