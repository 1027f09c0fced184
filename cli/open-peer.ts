/** Opens the server peer on a data directory for offline CLI commands. */
import { existsSync } from 'node:fs'
import { hasCode } from '../core/errors.js'
import { checkRole, roleOfDir } from '../peers/data-role.js'
import { createServer, type ServerPeer } from '../server-peer/create-server.js'
import { CliError, openFailure } from './args.js'

/**
 * Refuses, before anything is opened or written, a directory that is not a
 * server's: a device's (its role file says so; `WRONG_DATA_DIR`), or none at
 * all (a typo would otherwise create a new, empty server there).
 */
export function checkServerDir(dataDir: string): void {
  if (!existsSync(dataDir))
    throw new CliError(
      `no data directory ${dataDir}: start the server there first (rostersync server --data ${dataDir}), or give --server and --token`,
      1,
    )
  checkRole(roleOfDir(dataDir), { role: 'server' }, dataDir)
}

/** Opens `dataDir` as the server peer, or explains why it cannot. */
export async function openServerData(dataDir: string): Promise<ServerPeer> {
  checkServerDir(dataDir)
  try {
    return await createServer({ dataDir, listen: false })
  } catch (error) {
    if (hasCode(error, 'STORAGE_FAILED')) {
      throw new CliError(
        openFailure(dataDir, error as Error, 'is a server running on it? Stop it first'),
        1,
      )
    }
    throw error
  }
}
