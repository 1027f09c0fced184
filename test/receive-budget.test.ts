/**
 * Which link a peer's bound on messages in progress closes
 * (`netLimits.receivingBytesMax`, transports/receive-deadline.ts): the one
 * whose message has come the slowest. A probe: with the link silent the
 * longest closed, links holding the bound and sending a byte now and then
 * looked alive, a link streaming small messages pushed the total past it,
 * and an honest 6 MiB push, between two of its reads, was the one closed,
 * every time. The transports' own tests (test/receive-stall.test.ts,
 * test/lan-door.test.ts) run the bound over real sockets.
 */
import { describe, expect, it } from 'vitest'
import { netLimits } from '../core/limits.js'
import { ReceiveBudget, ReceiveDeadline } from '../transports/receive-deadline.js'
import { withLimits } from './helpers/limits.js'

/** A budget of 10,000 bytes on a clock the test moves, and links that note when they are closed. */
function site(): {
  budget: ReceiveBudget
  closed: string[]
  link: (name: string) => ReceiveDeadline
  at: (ms: number, deadline: ReceiveDeadline | undefined, bytes: number) => void
} {
  withLimits(netLimits, { receivingBytesMax: 10_000 })
  let now = 0
  const budget = new ReceiveBudget(() => now)
  const closed: string[] = []
  return {
    budget,
    closed,
    link: (name) => new ReceiveDeadline(() => closed.push(name), budget),
    // A read at `ms` leaves `bytes` of the link's message read.
    at: (ms, deadline, bytes) => {
      now = ms
      deadline?.observe(true, bytes, 0)
    },
  }
}

describe('a peer past its bound on messages in progress', () => {
  it('closes the link whose message came the slowest, not the honest one between two reads', async () => {
    const { budget, closed, link, at } = site()
    const hoarder = link('hoarder')
    const honest = link('honest')
    const streamer = link('streamer')
    // Most of a message, then a byte now and then for 20 s: never silent long.
    at(0, hoarder, 6_000)
    at(19_900, honest, 1_000)
    at(19_960, honest, 1_500)
    at(19_990, hoarder, 7_000)
    at(19_996, streamer, 1_200)
    await Promise.resolve()
    expect(closed).toEqual([])
    // The streamer's read goes past the bound while the honest link is between reads.
    at(20_000, streamer, 1_600)
    await Promise.resolve()
    expect(closed).toEqual(['hoarder'])
    expect(budget.bytes).toBe(3_100)
    for (const deadline of [honest, streamer]) deadline.stop()
    expect(budget.bytes).toBe(0)
  })

  it('closes none of the links holding less than their share, however slow they look (a review: a frame head read alone looked slowest)', async () => {
    const { closed, link, at } = site()
    const [head, small, first, second] = ['head', 'small', 'first', 'second'].map(link)
    at(0, first, 5_000)
    at(10_000, head, 0)
    at(10_000, small, 300)
    at(10_005, second, 5_000)
    await Promise.resolve()
    // The slowest of those holding their share: the first hoard.
    expect(closed).toEqual(['first'])
    for (const d of [head, small, second]) d?.stop()
  })

  it('keeps one link past the bound when it is alone (one message of the largest size fits)', async () => {
    withLimits(netLimits, { receivingBytesMax: 1_000 })
    const budget = new ReceiveBudget(() => 0)
    const closed: number[] = []
    const alone = new ReceiveDeadline(() => closed.push(1), budget)
    alone.observe(true, 5_000, 0)
    await Promise.resolve()
    expect(closed).toEqual([])
    alone.stop()
  })
})
