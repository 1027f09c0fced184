/**
 * The contract every transport's connections keep: whole messages, in order,
 * both ways, large ones too, and a close that the other side hears after the
 * messages sent before it.
 */
import { afterEach, describe, expect, it } from 'vitest'
import type { CloseInfo, Connection } from '../../core/transport.js'

/** Two connected ends and a way to tear them down. */
export interface TransportFixture {
  readonly a: Connection
  readonly b: Connection
  cleanup(): Promise<void>
}

const collect = (conn: Connection): Uint8Array[] => {
  const got: Uint8Array[] = []
  conn.onMessage((m) => got.push(m.slice()))
  return got
}

async function until(check: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error('timed out')
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
}

/** Runs the transport contract against `make()`. */
export function runTransportContract(name: string, make: () => Promise<TransportFixture>): void {
  describe(`Transport contract: ${name}`, () => {
    let fixture: TransportFixture | undefined
    afterEach(async () => {
      await fixture?.cleanup()
      fixture = undefined
    })

    it('delivers whole messages in order, both ways', async () => {
      fixture = await make()
      const { a, b } = fixture
      const atB = collect(b)
      const atA = collect(a)
      for (let i = 0; i < 100; i++) a.send(Uint8Array.of(i, 255 - i))
      b.send(Uint8Array.of(7, 7, 7))
      await until(() => atB.length === 100 && atA.length === 1)
      expect(atB.map((m) => [...m])).toEqual(Array.from({ length: 100 }, (_, i) => [i, 255 - i]))
      expect([...(atA[0] ?? [])]).toEqual([7, 7, 7])
    })

    it('carries a 1 MiB message intact, and the empty message', async () => {
      fixture = await make()
      const { a, b } = fixture
      const atB = collect(b)
      const big = Uint8Array.from({ length: 1024 * 1024 }, (_, i) => (i * 31) % 251)
      a.send(big)
      a.send(new Uint8Array(0))
      await until(() => atB.length === 2)
      expect(atB[0]?.byteLength).toBe(big.byteLength)
      expect(atB[0]?.every((v, i) => v === big[i])).toBe(true)
      expect(atB[1]?.byteLength).toBe(0)
    })

    it('a close reaches the other side after the messages sent before it, with code and reason', async () => {
      fixture = await make()
      const { a, b } = fixture
      const atB = collect(b)
      let closedB: CloseInfo | undefined
      let closedA: CloseInfo | undefined
      b.onClose((info) => (closedB = info))
      a.onClose((info) => (closedA = info))
      a.send(Uint8Array.of(1))
      a.send(Uint8Array.of(2))
      a.close(4403, 'PEER_REVOKED')
      await until(() => closedB !== undefined && closedA !== undefined)
      expect(atB.map((m) => m[0])).toEqual([1, 2])
      // B's side says the close was A's; A's own does not.
      expect(closedB).toEqual({ code: 4403, reason: 'PEER_REVOKED', byPeer: true })
      expect(closedA?.byPeer).toBeUndefined()
      expect(a.open).toBe(false)
      expect(b.open).toBe(false)
    })

    it('send after close does nothing and does not throw; close is idempotent', async () => {
      fixture = await make()
      const { a, b } = fixture
      const atB = collect(b)
      let closes = 0
      b.onClose(() => closes++)
      a.close()
      a.close()
      expect(() => a.send(Uint8Array.of(9))).not.toThrow()
      await until(() => closes === 1)
      await new Promise((resolve) => setTimeout(resolve, 20))
      expect(atB).toEqual([])
      expect(closes).toBe(1)
    })

    it('connections have distinct ids', async () => {
      fixture = await make()
      expect(fixture.a.id).not.toBe(fixture.b.id)
    })
  })
}
