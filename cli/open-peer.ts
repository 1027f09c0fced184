/** Opens the server peer on a data directory for offline CLI commands. */
import { accessSync, constants, existsSync } from 'node:fs'
import { userInfo } from 'node:os'
import { join } from 'node:path'
import { hasCode } from '../core/errors.js'
import { checkRole, ROLE_FILE, roleOfDir } from '../peers/data-role.js'
import type { ServerPeer } from '../server-peer/create-server.js'
import { CliError, openFailure } from './args.js'

/**
 * Refuses, before anything is opened or written, a directory that is not a
 * server's: a device's (its role file says so; `WRONG_DATA_DIR`), one that
 * holds no rostersync data (no role file, no `admin-token`, no database:
 * an empty folder, a home directory, another program's `./data`), or none
 * at all. Opening
 * either of the last two would make a new, empty server there, and a read
 * would answer "0 users" from it.
 */
export function checkServerDir(dataDir: string): void {
  if (dataDir === '') throw new CliError('--data is empty: name the data directory')
  const startFirst = `start the server there first (rostersync server --data ${dataDir}), or give --server and --token`
  if (!existsSync(dataDir)) throw new CliError(`no data directory ${dataDir}: ${startFirst}`, 1)
  checkReadable(dataDir)
  const role = roleOfDir(dataDir)
  // A database without a role file is data from before roles existed: its
  // keys say whose it is once opened (a device's is refused then).
  if (role === undefined && !existsSync(join(dataDir, 'CURRENT')))
    throw new CliError(
      existsSync(join(dataDir, ROLE_FILE))
        ? `${dataDir}/${ROLE_FILE} is damaged (not a rostersync role) and the folder holds no database: refused, nothing written`
        : `${dataDir} holds no rostersync server data (no ${ROLE_FILE}): refused, nothing written; ${startFirst}`,
      1,
    )
  checkRole(role, { role: 'server' }, dataDir)
}

/**
 * Opens `dataDir` as the server peer, or explains why it cannot. Without
 * `siteKey` the site key is the one the server keeps there (none is made):
 * a server given its key at start-up has none kept, and exports then need
 * it given (server-peer/site-access.ts).
 */
export async function openServerData(dataDir: string, siteKey?: string): Promise<ServerPeer> {
  checkServerDir(dataDir)
  // Loaded here: a command that only asks a running server over HTTP (and
  // --help) does without the peer's modules (Yjs, LevelDB, zod, ws).
  const { createServer } = await import('../server-peer/create-server.js')
  try {
    return await createServer({
      dataDir,
      listen: false,
      ...(siteKey === undefined ? {} : { siteKey }),
    })
  } catch (error) {
    if (hasCode(error, 'AUTH_FAILED'))
      throw new CliError(
        `AUTH_FAILED: ${(error as Error).message} (--site-key, ROSTERSYNC_SITE_KEY)`,
        1,
      )
    if (hasCode(error, 'STORAGE_FAILED')) {
      throw new CliError(
        openFailure(
          dataDir,
          error as Error,
          'is a server running on it? Stop it first, or reach it with --server <http url> --token <admin token>',
        ),
        1,
      )
    }
    throw error
  }
}

/**
 * Refuses a data directory this user cannot read (it is 0700, its
 * owner's): "holds no rostersync server data", with the advice to start a
 * server there, misled an operator running the CLI as another user (a
 * probe).
 */
function checkReadable(dataDir: string): void {
  try {
    accessSync(dataDir, constants.R_OK | constants.X_OK)
  } catch {
    throw new CliError(
      `${dataDir} cannot be read by this user (${userName()}): permission denied; run rostersync as the user that owns it`,
      1,
    )
  }
}

/** This process's user name, or its uid when it has none (a container's). */
function userName(): string {
  try {
    return userInfo().username
  } catch {
    return `uid ${process.getuid?.() ?? '?'}`
  }
}
