/**
 * A close reason as a WebSocket close frame carries it: at most 123 bytes
 * of UTF-8 (`ws` throws on a longer one). Every transport's closes go
 * through it (transports/ws-transport.ts), and so do sessions' refusals.
 */
/** WebSocket close reasons are at most 123 bytes of UTF-8. */
const CLOSE_REASON_BYTES_MAX = 123

/** `text` cut to what a WebSocket close frame carries (whole characters). */
export function closeReason(text: string): string {
  const encoder = new TextEncoder()
  if (encoder.encode(text).byteLength <= CLOSE_REASON_BYTES_MAX) return text
  let out = ''
  let bytes = 0
  for (const char of text) {
    const size = encoder.encode(char).byteLength
    if (bytes + size > CLOSE_REASON_BYTES_MAX) break
    out += char
    bytes += size
  }
  return out
}
