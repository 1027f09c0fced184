/**
 * A test's view of a real connection: every member forwarded to `conn`
 * except those `overrides` replaces (a handler that holds, counts or
 * records what arrives). Only the members every transport has are
 * forwarded: a wrapper says nothing of what `conn` buffers, as the tests'
 * hand-written wrappers did.
 */
import type { Connection } from '../../core/transport.js'

export function wrapConnection(
  conn: Connection,
  overrides: Partial<Pick<Connection, 'send' | 'onMessage' | 'onClose' | 'close'>> & {
    /** What the wrapper says it buffers (a socket that does not drain), read at each call. */
    readonly bufferedBytes?: () => number
  },
): Connection {
  const wrapped: Connection = {
    id: conn.id,
    remote: conn.remote,
    get open() {
      return conn.open
    },
    send: overrides.send ?? ((message) => conn.send(message)),
    onMessage: overrides.onMessage ?? ((handler) => conn.onMessage(handler)),
    onClose: overrides.onClose ?? ((handler) => conn.onClose(handler)),
    close: overrides.close ?? ((code, reason) => conn.close(code, reason)),
  }
  const buffered = overrides.bufferedBytes
  if (buffered !== undefined) Object.defineProperty(wrapped, 'bufferedBytes', { get: buffered })
  return wrapped
}
