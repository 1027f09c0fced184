/**
 * The server's front door: connections before they are anyone (PROTOCOL.md,
 * "Limits per link"). A TCP connection in its handshake (no request head yet) and a
 * WebSocket upgrade waiting for its turn are counted per remote address
 * (addressKey), so that a few hosts cannot take every place.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { netLimits } from '../core/limits.js'

/**
 * The key a remote address is counted under: an IPv4 address as itself
 * however the socket gives it (`::ffff:1.2.3.4`), an IPv6 address by its
 * /64 (one host is handed a whole /64, and picks any address in it).
 */
export function addressKey(address: string): string {
  if (address.startsWith('::ffff:') && address.includes('.')) return address.slice(7)
  if (!address.includes(':')) return address
  const [head = '', tail] = address.split('::')
  const front = head === '' ? [] : head.split(':')
  const back = tail === undefined || tail === '' ? [] : tail.split(':')
  const zeros: string[] = Array.from({ length: 8 - front.length - back.length }, () => '0')
  const groups = tail === undefined ? front : [...front, ...zeros, ...back]
  const trimmed = groups.slice(0, 4).map((g) => (g.replace(/^0+(?=.)/, '') || '0').toLowerCase())
  return `${trimmed.join(':')}::/64`
}

/** How many sockets each remote address has in one stage (handshake, upgrade queue). */
class AddressCounts {
  private readonly counts = new Map<string, number>()

  of(address: string): number {
    return this.counts.get(address) ?? 0
  }

  add(address: string): void {
    this.counts.set(address, this.of(address) + 1)
  }

  remove(address: string): void {
    const left = this.of(address) - 1
    if (left > 0) this.counts.set(address, left)
    else this.counts.delete(address)
  }

  /** The address holding the most, and how many. */
  most(): readonly [string, number] | undefined {
    let top: [string, number] | undefined
    for (const [address, count] of this.counts) if (count > (top?.[1] ?? 0)) top = [address, count]
    return top
  }

  clear(): void {
    this.counts.clear()
  }
}

/**
 * WebSocket upgrades waiting for their turn: at most
 * `netLimits.upgradesPerTurnMax` are completed (handshake, admission,
 * session start) per event-loop turn, and no more once the turn took
 * `netLimits.upgradeTurnMsMax`, in arrival order, so that 2,000
 * upgrades arriving together do not hold the loop for the time of all of
 * them (the flood bench measured a connected device's round trip at 18x
 * idle). Nothing waits long: every turn takes the next slice. One address
 * may have at most `handshakesPerAddressMax` waiting, as in its handshake,
 * so that one host's burst cannot take every place.
 */
export class UpgradeQueue {
  private readonly waiting: Array<{ req: IncomingMessage; socket: Socket; head: Buffer }> = []
  private readonly perAddress = new AddressCounts()
  private scheduled: NodeJS.Immediate | undefined

  constructor(
    private readonly complete: (req: IncomingMessage, socket: Socket, head: Buffer) => void,
  ) {}

  add(req: IncomingMessage, socket: Socket, head: Buffer): void {
    const address = addressKey(socket.remoteAddress ?? '')
    if (
      this.waiting.length >= netLimits.upgradesWaitingMax ||
      this.perAddress.of(address) >= netLimits.handshakesPerAddressMax
    ) {
      socket.destroy()
      return
    }
    this.perAddress.add(address)
    this.waiting.push({ req, socket, head })
    this.scheduled ??= setImmediate(() => this.turn())
  }

  private turn(): void {
    this.scheduled = undefined
    const started = performance.now()
    for (let done = 0; done < netLimits.upgradesPerTurnMax;) {
      // A turn also ends once it took upgradeTurnMsMax (a slow machine, a
      // loaded one): the next waits for the following turn.
      if (done > 0 && performance.now() - started >= netLimits.upgradeTurnMsMax) break
      const next = this.waiting.shift()
      if (next === undefined) return
      this.perAddress.remove(addressKey(next.socket.remoteAddress ?? ''))
      // Gone while it waited: nothing to complete.
      if (next.socket.destroyed) continue
      this.complete(next.req, next.socket, next.head)
      done++
    }
    if (this.waiting.length > 0) this.scheduled = setImmediate(() => this.turn())
  }

  close(): void {
    if (this.scheduled !== undefined) clearImmediate(this.scheduled)
    this.scheduled = undefined
    for (const { socket } of this.waiting.splice(0)) socket.destroy()
    this.perAddress.clear()
  }
}

/**
 * HTTP requests being handled (their head read, their response not
 * finished): a request whose body never comes is held until
 * `netLimits.httpRequestTimeoutMs`, past the handshake's bounds. One
 * address held 1,500 sign-ins with their bodies unsent for 40 s, and
 * 10,500 took every file descriptor the server had (a hostile probe). Past
 * `httpRequestsPerAddressMax` from one address (an IPv6 /64 as one), or
 * `httpRequestsInFlightMax` in all, a request is answered at once (429 or
 * 503 `RATE_LIMITED`) and its connection closed.
 */
export class RequestsInFlight {
  private readonly perAddress = new AddressCounts()
  private total = 0

  /** Counts `req` until its response is done; false (answered, closed) past the bounds. */
  admit(req: IncomingMessage, res: ServerResponse): boolean {
    const address = addressKey(req.socket.remoteAddress ?? '')
    const perAddress = this.perAddress.of(address) >= netLimits.httpRequestsPerAddressMax
    if (perAddress || this.total >= netLimits.httpRequestsInFlightMax) {
      const message = perAddress
        ? `more than ${netLimits.httpRequestsPerAddressMax} requests from this address at once`
        : `more than ${netLimits.httpRequestsInFlightMax} requests at once`
      res.shouldKeepAlive = false
      res
        .writeHead(perAddress ? 429 : 503, {
          'content-type': 'application/json',
          connection: 'close',
        })
        .end(JSON.stringify({ error: { code: 'RATE_LIMITED', message } }))
      // Its body is not read: the connection goes with the answer.
      res.once('finish', () => req.socket.destroy())
      return false
    }
    this.perAddress.add(address)
    this.total++
    res.once('close', () => {
      this.perAddress.remove(address)
      this.total--
    })
    return true
  }
}

/**
 * Connections that have not sent a request head yet: nobody knows who they
 * are, so they get little. Each is dropped after the handshake timeout;
 * past `handshakesPerAddressMax` from one address, or
 * `handshakesInFlightMax` in all, a new one is dropped at once, unless it
 * comes from an address holding fewer than the one holding the most (then
 * that one's oldest goes: evictFor). A client that trickles its headers
 * byte by byte (slowloris) holds a slot for the timeout at most, and a few
 * addresses cannot take every slot.
 */
export class Handshakes {
  private readonly pending = new Map<Socket, { address: string; timer: NodeJS.Timeout }>()
  private readonly perAddress = new AddressCounts()

  constructor(private readonly timeoutMs: number) {}

  start(socket: Socket): void {
    const address = addressKey(socket.remoteAddress ?? '')
    if (
      this.perAddress.of(address) >= netLimits.handshakesPerAddressMax ||
      (this.pending.size >= netLimits.handshakesInFlightMax && !this.evictFor(address))
    ) {
      socket.destroy()
      return
    }
    // Wall time on purpose: this guards real sockets, whatever clock the
    // peer was given.
    const timer = setTimeout(() => socket.destroy(), this.timeoutMs)
    timer.unref()
    this.pending.set(socket, { address, timer })
    this.perAddress.add(address)
    socket.once('close', () => this.done(socket))
  }

  /**
   * Every slot is taken: a newcomer from `address` takes the place of the
   * oldest connection of the address holding the most, if that holds more
   * than the newcomer's would (idle connections from a few addresses
   * filled every slot, and no new device could join). False when none is
   * let go.
   */
  private evictFor(address: string): boolean {
    const [top, count] = this.perAddress.most() ?? ['', 0]
    if (count <= this.perAddress.of(address) + 1) return false
    for (const [socket, entry] of this.pending)
      if (entry.address === top) {
        this.done(socket)
        socket.destroy()
        return true
      }
    return false
  }

  /** The socket sent its request head (or closed): it is no longer in its handshake. */
  done(socket: Socket): void {
    const entry = this.pending.get(socket)
    if (entry === undefined) return
    clearTimeout(entry.timer)
    this.pending.delete(socket)
    this.perAddress.remove(entry.address)
  }

  close(): void {
    for (const socket of [...this.pending.keys()]) this.done(socket)
  }
}
