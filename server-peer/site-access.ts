/**
 * How devices join a server, and the site key an offline tool uses
 * (`rostersync export --data`): a server that listens records in its
 * store whether its site is open, keeps its key in `<dataDir>/site-key`,
 * or was given one (only the key's hash is kept then; the key stays
 * wherever the operator keeps it). A server opened without listening
 * never makes a key: it reads the file, or knows that it does not know
 * the key (an export then needs it given, or a passphrase).
 */
import { randomBytes, scryptSync } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { AuthFailedError, InvalidOptionsError } from '../core/errors.js'
import type { Replica } from '../peers/replica.js'

/**
 * What the store says of the site's key (record `site` / `access`). A
 * given key is kept as a salted scrypt hash: a backup of the store does
 * not let anyone test guesses of an operator's key fast.
 */
type SiteAccess =
  | { readonly mode: 'open' }
  | { readonly mode: 'file' }
  | { readonly mode: 'given'; readonly salt: string; readonly keyHash: string }

const NAMESPACE = 'site'
const KEY = 'access'

/** The site key a server uses, where it is kept, and whether it is known. */
export interface SiteKey {
  /** The key; undefined on an open site, or when not known (`known`). */
  readonly siteKey: string | undefined
  /** `<dataDir>/site-key` when the key is that file's. */
  readonly siteKeyFile: string | undefined
  /** False when the site has a key this process was not given (an offline tool's). */
  readonly known: boolean
  /**
   * Records how devices join, once the server listens (a server that fails
   * to start must not change what an offline export takes).
   */
  readonly record: () => Promise<void>
}

/**
 * Settles the site key of a server opening `replica`: `open`, the given
 * `siteKey`, or the data directory's file (made on first start, never by a
 * server that does not listen). A given key that differs from the one the
 * server last ran with is refused without listening (`AUTH_FAILED`): an
 * offline export under it would be refused by every device.
 */
export async function settleSiteKey(
  options: {
    readonly dataDir?: string | undefined
    readonly siteKey?: string | undefined
    readonly open?: boolean | undefined
    readonly listen?: boolean | undefined
  },
  replica: Replica,
): Promise<SiteKey> {
  const listening = options.listen !== false
  const recorded = asSiteAccess(replica.record(NAMESPACE, KEY))
  const file = options.dataDir === undefined ? undefined : join(options.dataDir, 'site-key')
  const noRecord = async (): Promise<void> => undefined
  if (!listening && file !== undefined) {
    // Offline: what the server last ran with, and no key made. A key given
    // must be that one (an environment variable left set from another
    // site's shell would encrypt an export no device opens).
    const kept =
      recorded?.mode === 'given' || recorded?.mode === 'open' ? undefined : await readSecret(file)
    const given = options.siteKey
    if (options.open === true || recorded?.mode === 'open') {
      if (given !== undefined)
        throw new AuthFailedError(
          'this server last ran as an open site: it has no site key to give',
        )
      return { siteKey: undefined, siteKeyFile: undefined, known: true, record: noRecord }
    }
    if (given !== undefined) {
      const same =
        recorded?.mode === 'given'
          ? hashOf(given, recorded.salt) === recorded.keyHash
          : kept === undefined || kept === given
      if (!same)
        throw new AuthFailedError('the site key given is not the one this server last ran with')
      return { siteKey: given, siteKeyFile: undefined, known: true, record: noRecord }
    }
    return kept === undefined
      ? { siteKey: undefined, siteKeyFile: undefined, known: false, record: noRecord }
      : { siteKey: kept, siteKeyFile: file, known: true, record: noRecord }
  }
  let settled: Omit<SiteKey, 'record'>
  let access: SiteAccess
  if (options.open === true) {
    settled = { siteKey: undefined, siteKeyFile: undefined, known: true }
    access = { mode: 'open' }
  } else if (options.siteKey !== undefined) {
    const salt = recorded?.mode === 'given' ? recorded.salt : randomBytes(16).toString('base64url')
    // The hash is kept only in a data directory's store (what an offline
    // export checks a given key against): a server on a store it was handed
    // records nothing, and makes none (30 ms of scrypt at every start; the
    // simulator starts a site's server two to four times a run).
    const keyHash = options.dataDir === undefined ? '' : hashOf(options.siteKey, salt)
    access = { mode: 'given', salt, keyHash }
    settled = { siteKey: options.siteKey, siteKeyFile: undefined, known: true }
    // A key generated on an earlier start stays in the file: devices
    // started with it (--site-key-file <data>/site-key, as the README
    // says) would be refused with AUTH_FAILED and nobody told why.
    const stale = file === undefined || !listening ? undefined : await readSecret(file)
    if (stale !== undefined && stale !== options.siteKey)
      process.emitWarning(
        `${file} holds another site key than the one this server was given: devices that read it are refused (AUTH_FAILED); put the given key in it, or remove it`,
        { code: 'ROSTERSYNC_STALE_SITE_KEY_FILE' },
      )
  } else {
    // Given a key last time, and none now (a variable unset, a flag left
    // out): a key made now would lock every device out, and a device
    // refused with AUTH_FAILED does not try again on its own (a probe:
    // the server made a new key in silence).
    if (listening && recorded?.mode === 'given')
      throw new InvalidOptionsError(
        'this server last ran with a site key it was given (--site-key, --site-key-file or ROSTERSYNC_SITE_KEY): give it again; to change the site key, give the new one (every device needs it)',
      )
    // Its own file, gone (a restore that left it out, a slip): the same.
    if (listening && recorded?.mode === 'file' && file !== undefined && !existsSync(file))
      throw new InvalidOptionsError(
        `${file} is gone, and this server last ran with the site key kept in it: restore it from a backup (every device holds that key); to change the site key, give the new one (--site-key-file; every device needs it)`,
      )
    settled = {
      siteKey: await secretFor(options.dataDir, 'site-key'),
      siteKeyFile: file,
      known: true,
    }
    access = { mode: 'file' }
  }
  const record =
    listening && options.dataDir !== undefined && !sameAccess(recorded, access)
      ? () => replica.setRecord(NAMESPACE, KEY, access)
      : noRecord
  return { ...settled, record }
}

/**
 * A secret kept in `<dataDir>/<name>` (mode 0600), made on first use;
 * random without a dataDir. A file there that holds no usable secret
 * (empty, or under 16 characters: a truncated copy, a bad restore) is
 * refused, not replaced: a new site key locks every device out (a probe:
 * an emptied `site-key` was overwritten in silence).
 */
export async function secretFor(dataDir: string | undefined, name: string): Promise<string> {
  if (dataDir === undefined) return randomBytes(24).toString('hex')
  const file = join(dataDir, name)
  const kept = await readSecret(file)
  if (kept !== undefined) return kept
  if (existsSync(file))
    throw new InvalidOptionsError(
      `${file} holds no usable secret (at least 16 characters): restore it from a backup, or remove it to make a new one${name === 'site-key' ? ' (every device then needs the new key)' : ''}`,
    )
  const token = randomBytes(24).toString('hex')
  await mkdir(dataDir, { recursive: true })
  await writeFile(file, `${token}\n`, { mode: 0o600 })
  return token
}

/**
 * The secret in `file`, when there is one (at least 16 characters); a file
 * that is there but cannot be read (its mode, a folder) is an error, not
 * "no secret" (a review: the advice was then to remove it).
 */
async function readSecret(file: string): Promise<string | undefined> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (error) {
    if ((error as { code?: unknown }).code === 'ENOENT') return undefined
    throw new InvalidOptionsError(`${file} cannot be read: ${(error as Error).message}`)
  }
  const token = text.trim()
  return token.length >= 16 ? token : undefined
}

/** A given key's hash: scrypt (2^14, about 30 ms) under the record's salt. */
const hashOf = (siteKey: string, salt: string): string =>
  scryptSync(siteKey, `rostersync/site-key/1/${salt}`, 32, { N: 2 ** 14 }).toString('hex')

function asSiteAccess(value: unknown): SiteAccess | undefined {
  if (typeof value !== 'object' || value === null) return undefined
  const { mode, keyHash } = value as { mode?: unknown; keyHash?: unknown }
  if (mode === 'open' || mode === 'file') return { mode }
  const { salt } = value as { salt?: unknown }
  if (mode === 'given' && typeof keyHash === 'string' && typeof salt === 'string')
    return { mode, salt, keyHash }
  return undefined
}

function sameAccess(a: SiteAccess | undefined, b: SiteAccess): boolean {
  return (
    a !== undefined &&
    a.mode === b.mode &&
    (a.mode !== 'given' || (b.mode === 'given' && a.salt === b.salt && a.keyHash === b.keyHash))
  )
}
