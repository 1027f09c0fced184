/**
 * A fix for the stream cipher of the LAN's private network. `@libp2p/pnet`
 * encrypts every connection with `xsalsa20` 1.2.0, whose WebAssembly build
 * shares one memory (at most 1,000 pages, 64 MB) among all its streams but
 * lets each stream keep its own view of it. Once one stream grows the memory
 * (any send over about 640 kB), every other stream's view is detached (length
 * 0), so each of its later sends grows the memory again by the whole send:
 * two LAN links exchanging small messages after one large sync exhaust the
 * 64 MB in about 1,000 messages, and the `RangeError` escapes from the
 * muxer's send loop as an uncaught exception that ends the device's process
 * (found by test/hostile-frames.test.ts). One send above 64 MB fails the
 * same way on its own.
 *
 * The fix, installed once on import: a stream refreshes its view of the
 * shared memory before deciding to grow it (so memory grows only to the
 * largest chunk), and one call encrypts at most `CHUNK_BYTES` at a time (the
 * cipher is a stream, so chunking changes nothing on the wire). It patches
 * the very module instance `@libp2p/pnet` imports, and checks the shape it
 * patches: if a later version changes it, it throws at start-up instead of
 * leaving the bug in place unnoticed.
 */
import { createRequire } from 'node:module'

/** Largest slice one cipher call takes: the memory the cipher needs stays near this. */
const CHUNK_BYTES = 1024 * 1024

// Methods as properties with an explicit `this`: they are taken off their
// prototypes and called on other instances.
interface XorStream {
  update: (this: XorStream, input: Uint8Array, output?: Uint8Array) => Uint8Array
  finalize: (this: XorStream) => void
  _xor: WasmXor
}

interface WasmXor {
  _memory: Uint8Array
  realloc: (this: WasmXor, size: number) => void
  finalize: (this: WasmXor) => void
}

type XSalsa20 = ((nonce: Uint8Array, key: Uint8Array) => XorStream) & {
  prototype: XorStream
}

let installed = false

/** Installs the fix (idempotent). */
export function fixXsalsa20(): void {
  if (installed) return
  installed = true
  // Resolved from @libp2p/pnet's own location: the instance it encrypts with.
  const fromPnet = createRequire(import.meta.resolve('@libp2p/pnet'))
  const xsalsa20 = fromPnet('xsalsa20') as XSalsa20
  const probe = xsalsa20(new Uint8Array(24), new Uint8Array(32))
  const wasm = Object.getPrototypeOf(probe._xor) as WasmXor
  const update = xsalsa20.prototype.update
  if (typeof update !== 'function') throw new Error('xsalsa20 changed shape: no update()')
  xsalsa20.prototype.update = function chunked(
    this: XorStream,
    input: Uint8Array,
    output: Uint8Array = new Uint8Array(input.length),
  ): Uint8Array {
    // Slices are multiples of 64 bytes (the cipher's block), though the
    // cipher carries partial blocks over between calls anyway.
    for (let at = 0; at < input.length; at += CHUNK_BYTES) {
      update.call(this, input.subarray(at, at + CHUNK_BYTES), output.subarray(at, at + CHUNK_BYTES))
    }
    return output
  }
  if (!(probe._xor._memory instanceof Uint8Array)) {
    // No WebAssembly: the library's JavaScript cipher has no shared memory.
    probe.finalize()
    return
  }
  const realloc = wasm.realloc
  const finalize = wasm.finalize
  if (typeof realloc !== 'function' || typeof finalize !== 'function') {
    throw new Error('xsalsa20 changed shape: no realloc()/finalize() on its WebAssembly stream')
  }
  /** A view of the memory's current buffer: every growth goes through realloc below. */
  let live: Uint8Array = probe._xor._memory
  const refresh = (stream: WasmXor): void => {
    if (live.byteLength > stream._memory.byteLength) stream._memory = live
  }
  wasm.realloc = function refreshed(this: WasmXor, size: number): void {
    refresh(this)
    if (size >= this._memory.length) realloc.call(this, size)
    live = this._memory
  }
  wasm.finalize = function refreshedFinalize(this: WasmXor): void {
    // Zeroing the key needs a live view too.
    refresh(this)
    finalize.call(this)
  }
  probe.finalize()
}
