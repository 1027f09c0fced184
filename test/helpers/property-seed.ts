/**
 * The environment knobs of the property tests: an integer variable, and the
 * seed (`ROSTERSYNC_SEED`, or a fresh one), which each test prints with the
 * command that replays it.
 */

/** An integer environment variable, or undefined when unset; throws on anything else. */
export const envInt = (name: string): number | undefined => {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return undefined
  const value = Number(raw)
  if (!Number.isSafeInteger(value)) throw new Error(`${name} must be an integer, got ${raw}`)
  return value
}

/** `ROSTERSYNC_SEED`, or a fresh seed. */
export const seedFromEnv = (): number =>
  envInt('ROSTERSYNC_SEED') ?? (Date.now() ^ (Math.random() * 0x7fffffff)) | 0
