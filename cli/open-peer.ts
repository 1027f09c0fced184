/** Opens the server peer on a data directory for offline CLI commands. */
import { hasCode } from '../core/errors.js'
import { createServer, type ServerPeer } from '../server-peer/create-server.js'
import { CliError } from './args.js'

/** Opens `dataDir` as the server peer, or explains why it cannot. */
export async function openServerData(dataDir: string): Promise<ServerPeer> {
  try {
    return await createServer({ dataDir, listen: false })
  } catch (error) {
    if (hasCode(error, 'STORAGE_FAILED')) {
      throw new CliError(
        `cannot open ${dataDir}: is a server running on it? (${(error as Error).message})`,
        1,
      )
    }
    throw error
  }
}
