import { availableParallelism } from 'node:os'
import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // The package built once for the run (the CLI tests run it).
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // Vitest's default (cores - 1) runs the files one at a time on a 2-core
    // machine: most of the suite waits on sockets, child processes and
    // timers, and two files side by side take the suite from about 8.5 to
    // 4.5 minutes there.
    maxWorkers: Math.max(2, availableParallelism() - 1),
  },
})
