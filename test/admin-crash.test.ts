/**
 * A SIGKILL at any store write of an administrator's operation (a real
 * child process on LevelDB, test/fixtures/admin-crash-child.ts) leaves a
 * state that the operation, asked again, completes (crash probe):
 * - a device's key reset: the old key is revoked once the reset, tried
 *   again after the restart, says it is done (the binding and the
 *   revocation were two writes: killed between them, the old key was
 *   neither bound nor revoked, and the retry found nothing to revoke);
 * - an import on a device never admitted: users imported means the
 *   server's key pinned (the import was written before the pin: killed
 *   between them, the device later took a hello from another server).
 */
import { cp, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createDevice } from '../peers/create-device.js'
import { createServer } from '../server-peer/create-server.js'
import { eventually } from './helpers/eventually.js'
import { runStallingChild, type ChildRun } from './helpers/stalling-child.js'

const SITE_KEY = 'admin-crash-site-key'
const childScript = fileURLToPath(new URL('./fixtures/admin-crash-child.ts', import.meta.url))

let dir = ''
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rostersync-admin-crash-'))
})
afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

/** Writes the child made once armed (its dry run). */
const writesOf = (run: ChildRun): string[] => run.lines.filter((l) => l.startsWith('WRITE '))

describe("a SIGKILL at any store write of a device's key reset", () => {
  it('leaves a reset that, tried again, revokes the old key', async () => {
    // A server with device R1's key bound.
    const base = join(dir, 'reset-base')
    const server = await createServer({ dataDir: join(base, 'server'), siteKey: SITE_KEY })
    const device = await createDevice({
      id: 'R1',
      dataDir: join(base, 'device'),
      server: server.url,
      siteKey: SITE_KEY,
    })
    await device.sync.whenReady()
    await eventually(() => expect(server.devices.list()[0]?.keyFingerprint).toBeDefined())
    const revocation = `key/${device.keyFingerprint}`
    await device.close()
    await server.close()

    const copy = async (name: string): Promise<string> => {
      const dataDir = join(dir, name)
      await cp(join(base, 'server'), dataDir, { recursive: true })
      return dataDir
    }
    const dry = await runStallingChild(childScript, {
      op: 'reset-key',
      dataDir: await copy('reset-dry'),
      siteKey: SITE_KEY,
      deviceId: 'R1',
    })
    expect(dry.lines, dry.stderr).toContain('RESET true')
    const writes = writesOf(dry)
    expect(writes.length, dry.stderr).toBeGreaterThanOrEqual(2)
    for (let n = 1; n <= writes.length; n++) {
      for (const when of ['before', 'after'] as const) {
        const dataDir = await copy(`reset-${n}-${when}`)
        const run = await runStallingChild(childScript, {
          op: 'reset-key',
          dataDir,
          siteKey: SITE_KEY,
          deviceId: 'R1',
          stallAt: n,
          stallWhen: when,
        })
        const where = `killed ${when} write ${n} (${run.stall ?? 'no stall'})`
        expect(run.stall, `${where}; stderr: ${run.stderr}`).toBeDefined()
        // The administrator tries again after the restart.
        const again = await createServer({ dataDir, siteKey: SITE_KEY, listen: false })
        try {
          expect(await again.devices.resetKey('R1'), where).toBe(true)
          expect(again.replica.isRevoked(revocation), where).toBe(true)
          expect(again.devices.list()[0]?.keyFingerprint, where).toBeUndefined()
        } finally {
          await again.close()
        }
        await rm(dataDir, { recursive: true, force: true })
      }
    }
  }, 120_000)
})

describe('a SIGKILL at any store write of an import on a device never admitted', () => {
  it('leaves nothing, or the key pinned: never users without the pin', async () => {
    const server = await createServer({ dataDir: join(dir, 'import-server'), siteKey: SITE_KEY })
    for (let i = 0; i < 20; i++) await server.users.put({ id: `x${i}`, name: `X ${i}` })
    const { file } = await server.exportUsers({
      userIds: Array.from({ length: 20 }, (_, i) => `x${i}`),
    })
    const fingerprint = server.keyFingerprint
    await server.close()
    const filePath = join(dir, 'site.export')
    await writeFile(filePath, file)
    const childOptions = (name: string): Record<string, unknown> => ({
      op: 'import',
      dataDir: join(dir, name),
      siteKey: SITE_KEY,
      file: filePath,
      serverKeyFingerprint: fingerprint,
    })
    const dry = await runStallingChild(childScript, childOptions('import-dry'))
    expect(
      dry.lines.some((l) => l.startsWith('IMPORTED ')),
      dry.stderr,
    ).toBe(true)
    const writes = writesOf(dry)
    expect(writes.length, dry.stderr).toBeGreaterThanOrEqual(2)
    const outcomes = new Set<string>()
    for (let n = 1; n <= writes.length; n++) {
      for (const when of ['before', 'after'] as const) {
        const name = `import-${n}-${when}`
        const run = await runStallingChild(childScript, {
          ...childOptions(name),
          stallAt: n,
          stallWhen: when,
        })
        const where = `killed ${when} write ${n} (${run.stall ?? 'no stall'})`
        expect(run.stall, `${where}; stderr: ${run.stderr}`).toBeDefined()
        const device = await createDevice({
          id: 'importer',
          dataDir: join(dir, name),
          server: 'ws://127.0.0.1:9',
          siteKey: SITE_KEY,
        })
        try {
          const users = device.users.list().length
          expect([0, 20], where).toContain(users)
          // Pinned: the file is taken without its fingerprint.
          const pinned = await device.importUsers(file).then(
            () => true,
            (error: { code?: string }) => {
              expect(error.code, where).toBe('AUTH_FAILED')
              return false
            },
          )
          if (users > 0) expect(pinned, `${where}: users imported, no key pinned`).toBe(true)
          outcomes.add(users > 0 ? 'imported' : pinned ? 'pinned only' : 'nothing')
        } finally {
          await device.close()
        }
        await rm(join(dir, name), { recursive: true, force: true })
      }
    }
    expect(outcomes.has('imported')).toBe(true)
  }, 120_000)
})
