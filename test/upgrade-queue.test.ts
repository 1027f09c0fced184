/**
 * The server's upgrade queue (server-peer/sync-server.ts): upgrades that
 * arrive together are completed `upgradesPerTurnMax` per event-loop turn
 * (fewer once a turn took `upgradeTurnMsMax`), in arrival order; past `upgradesWaitingMax` waiting, a new one is
 * dropped; one whose socket closed while it waited is skipped; close drops
 * every waiting one.
 */
import type { IncomingMessage } from 'node:http'
import type { Socket } from 'node:net'
import { describe, expect, it } from 'vitest'
import { netLimits } from '../core/limits.js'
import { UpgradeQueue } from '../server-peer/sync-server.js'
import { withLimits } from './helpers/limits.js'

const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

/** A stand-in socket: only `destroyed`, `destroy()` and `remoteAddress` are used by the queue. */
function fakeSocket(remoteAddress = '127.0.0.1'): Socket {
  const socket = {
    destroyed: false,
    remoteAddress,
    destroy: () => ((socket.destroyed = true), socket),
  }
  return socket as unknown as Socket
}

describe('the upgrade queue', () => {
  it('completes at most upgradesPerTurnMax per turn, in arrival order', async () => {
    // Counted alone: a loaded machine's pause must not end a turn here.
    withLimits(netLimits, { upgradeTurnMsMax: 60_000 })
    const done: number[] = []
    const queue = new UpgradeQueue((req) => done.push(Number(req.url)))
    const n = netLimits.upgradesPerTurnMax * 3 + 5
    for (let i = 0; i < n; i++)
      queue.add({ url: String(i) } as IncomingMessage, fakeSocket(), Buffer.alloc(0))
    expect(done).toEqual([])
    const perTurn: number[] = []
    while (done.length < n) {
      const before = done.length
      await turn()
      perTurn.push(done.length - before)
    }
    expect(Math.max(...perTurn)).toBe(netLimits.upgradesPerTurnMax)
    expect(perTurn.filter((k) => k > 0).length).toBe(4)
    expect(done).toEqual(Array.from({ length: n }, (_, i) => i))
  })

  it('ends a turn once it took upgradeTurnMsMax, at least one upgrade per turn', async () => {
    const done: number[] = []
    // Each completion takes at least upgradeTurnMsMax / 2 of this thread.
    const queue = new UpgradeQueue((req) => {
      const until = performance.now() + netLimits.upgradeTurnMsMax / 2
      while (performance.now() < until);
      done.push(Number(req.url))
    })
    const n = netLimits.upgradesPerTurnMax
    for (let i = 0; i < n; i++)
      queue.add({ url: String(i) } as IncomingMessage, fakeSocket(), Buffer.alloc(0))
    const perTurn: number[] = []
    while (done.length < n) {
      const before = done.length
      await turn()
      perTurn.push(done.length - before)
    }
    // Two completions take the turn's time; a third never starts in it.
    expect(Math.max(...perTurn)).toBeLessThanOrEqual(2)
    expect(Math.min(...perTurn.filter((k) => k > 0))).toBeGreaterThanOrEqual(1)
    expect(done).toEqual(Array.from({ length: n }, (_, i) => i))
  })

  it('drops an upgrade past upgradesWaitingMax, skips a closed one, and drops all on close', async () => {
    // One turn serves all waiting, however slow the machine (as the first test).
    withLimits(netLimits, { upgradesWaitingMax: 3, upgradeTurnMsMax: 60_000 })
    const done: string[] = []
    const queue = new UpgradeQueue((req) => done.push(req.url ?? ''))
    const sockets = [fakeSocket(), fakeSocket(), fakeSocket(), fakeSocket()]
    sockets.forEach((s, i) => queue.add({ url: `a${i}` } as IncomingMessage, s, Buffer.alloc(0)))
    expect(sockets.map((s) => s.destroyed)).toEqual([false, false, false, true])
    sockets[1]?.destroy()
    await turn()
    expect(done).toEqual(['a0', 'a2'])
    const late = [fakeSocket(), fakeSocket()]
    late.forEach((s, i) => queue.add({ url: `b${i}` } as IncomingMessage, s, Buffer.alloc(0)))
    queue.close()
    await turn()
    expect(done).toEqual(['a0', 'a2'])
    expect(late.map((s) => s.destroyed)).toEqual([true, true])
  })

  it('takes at most handshakesPerAddressMax waiting from one address', async () => {
    withLimits(netLimits, { handshakesPerAddressMax: 2, upgradeTurnMsMax: 60_000 })
    const done: string[] = []
    const queue = new UpgradeQueue((req) => done.push(req.url ?? ''))
    const one = [fakeSocket('10.0.0.1'), fakeSocket('10.0.0.1'), fakeSocket('10.0.0.1')]
    one.forEach((s, i) => queue.add({ url: `a${i}` } as IncomingMessage, s, Buffer.alloc(0)))
    const other = fakeSocket('10.0.0.2')
    queue.add({ url: 'b' } as IncomingMessage, other, Buffer.alloc(0))
    expect(one.map((s) => s.destroyed)).toEqual([false, false, true])
    expect(other.destroyed).toBe(false)
    await turn()
    expect(done).toEqual(['a0', 'a1', 'b'])
    // Its places come back once they are served.
    const again = fakeSocket('10.0.0.1')
    queue.add({ url: 'a3' } as IncomingMessage, again, Buffer.alloc(0))
    expect(again.destroyed).toBe(false)
    queue.close()
  })
})
