#!/usr/bin/env node
// Entry point of `npx rostersync`: the built CLI when present (after
// `npm run build`), else the TypeScript sources through tsx.
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

const built = fileURLToPath(new URL('../dist/cli/main.js', import.meta.url))
process.env.ROSTERSYNC_CLI = '1'
if (existsSync(built)) {
  await import(built)
} else {
  const { register } = await import('tsx/esm/api')
  register()
  await import(fileURLToPath(new URL('../cli/main.ts', import.meta.url)))
}
