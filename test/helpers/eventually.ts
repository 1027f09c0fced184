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
