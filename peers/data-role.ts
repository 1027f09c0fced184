/**
 * Every data directory knows its role (issue 10): the server's, or one
 * device's (with its id). A server opened on a device's data would write
 * under `server` there (an admin token, the server's part of the roster),
 * and the device would be refused on every later sync; so each factory
 * checks the role before it writes anything, and the command line checks
 * it before it opens the database at all.
 *
 * The role is kept twice: in the store (`m/role`), which is the truth, and
 * in a small file beside the database (`rostersync-role.json`), which a
 * tool can read without opening LevelDB (a database another process holds
 * cannot be opened, and opening one rewrites some of its files). Data made
 * before roles existed is recognised by its keys: a device's store holds
 * its sync state (`r/sync/state`), a server's directory its `admin-token`.
 */
import { existsSync, readFileSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { decodeValue, encodeValue } from '../core/codec.js'
import { WrongDataDirError } from '../core/errors.js'
import type { Store } from '../core/store.js'
import { keys } from './storage-keys.js'

/** What a data directory is. */
export type DataRole =
  { readonly role: 'server' } | { readonly role: 'device'; readonly id: string }

/** The file beside the database that names its role. */
export const ROLE_FILE = 'rostersync-role.json'
const ROLE_KEY = 'm/role'

const asRole = (value: unknown): DataRole | undefined => {
  if (typeof value !== 'object' || value === null) return undefined
  const v = value as { role?: unknown; id?: unknown }
  if (v.role === 'server') return { role: 'server' }
  if (v.role === 'device' && typeof v.id === 'string') return { role: 'device', id: v.id }
  return undefined
}

/** A device role's id when a tool knows only that the data is a device's. */
const ANY_DEVICE = '?'

const describe = (role: DataRole): string =>
  role.role === 'server'
    ? "the server's"
    : role.id === ANY_DEVICE
      ? "a device's"
      : `device ${JSON.stringify(role.id)}'s`

/** Whether data of role `found` may be opened as `wanted`: same role, and the same device. */
const sameRole = (found: DataRole, wanted: DataRole): boolean =>
  found.role === 'server' || wanted.role === 'server'
    ? found.role === wanted.role
    : found.id === ANY_DEVICE || wanted.id === ANY_DEVICE || found.id === wanted.id

/**
 * The role a data directory declares, read without opening its database:
 * the role file, else an `admin-token` (a server's, before roles existed);
 * undefined when neither says.
 */
export function roleOfDir(dataDir: string): DataRole | undefined {
  try {
    const role = asRole(JSON.parse(readFileSync(join(dataDir, ROLE_FILE), 'utf8')))
    if (role !== undefined) return role
  } catch {
    // No role file (or a damaged one): the store says, once opened.
  }
  return existsSync(join(dataDir, 'admin-token')) ? { role: 'server' } : undefined
}

/** The role a store declares (`m/role`), or that its keys show; undefined for a new one. */
export async function roleOfStore(store: Store): Promise<DataRole | undefined> {
  const stored = await store.get(ROLE_KEY)
  if (stored !== undefined) {
    try {
      const role = asRole(decodeValue(stored))
      if (role !== undefined) return role
    } catch {
      // A damaged marker: fall back on what the keys show.
    }
  }
  if ((await store.get(keys.record('sync/state'))) !== undefined)
    return { role: 'device', id: ANY_DEVICE }
  return undefined
}

/**
 * Throws `WRONG_DATA_DIR` unless `found` (when known) is `wanted`'s role: a
 * device's data opened under another device id would sign with the first
 * device's key as the second, and the server refuses every write of it for
 * good (its key is bound to the first id).
 */
export function checkRole(found: DataRole | undefined, wanted: DataRole, where: string): void {
  if (found === undefined || sameRole(found, wanted)) return
  throw new WrongDataDirError(
    `${where} holds ${describe(found)} data, not ${describe(wanted)}: refused, nothing changed`,
  )
}

/**
 * Checks the role of an opened store (and its directory) and records it
 * where it is missing. Call before anything else writes to the store.
 */
export async function claimRole(
  store: Store,
  dataDir: string | undefined,
  wanted: DataRole,
): Promise<void> {
  const where = dataDir ?? 'the store'
  if (dataDir !== undefined) checkRole(roleOfDir(dataDir), wanted, where)
  const found = await roleOfStore(store)
  checkRole(found, wanted, where)
  if (found === undefined || (found.role === 'device' && found.id === ANY_DEVICE))
    await store.batch([{ type: 'put', key: ROLE_KEY, value: encodeValue(wanted) }])
  if (dataDir !== undefined && !existsSync(join(dataDir, ROLE_FILE)))
    await writeFile(join(dataDir, ROLE_FILE), `${JSON.stringify(wanted)}\n`)
}
