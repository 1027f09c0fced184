/**
 * Polling for tests over real networks, where "done" is observed, not
 * awaited. Bounded in time; on timeout the last failure is thrown.
 */

/** Polls until `check` stops throwing, or `timeoutMs` pass. */
export async function eventually(check: () => void, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    try {
      check()
      return
    } catch (error) {
      if (Date.now() > deadline) throw error
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
  }
}

/**
 * Polls an async `probe` until `ok` accepts its value, which it returns;
 * for peers in other processes, where each look is a request. Bounded in
 * time; on timeout it throws with the last value seen.
 */
export async function eventuallyValue<T>(
  probe: () => Promise<T>,
  ok: (v: T) => boolean,
  timeoutMs = 20_000,
  everyMs = 50,
): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await probe()
    if (ok(value)) return value
    if (Date.now() > deadline) throw new Error(`timed out; last value: ${JSON.stringify(value)}`)
    await new Promise((resolve) => setTimeout(resolve, everyMs))
  }
}
