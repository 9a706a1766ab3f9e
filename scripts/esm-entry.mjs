// Writes dist/index.mjs: an ES module that re-exports the CommonJS build, so ESM and CommonJS
// users share one module instance (one cache, one set of stores) instead of two copies.
import { createRequire } from 'node:module'
import { writeFileSync } from 'node:fs'

const require = createRequire(import.meta.url)
const names = Object.keys(require('../dist/index.js')).filter((n) => n !== '__esModule' && n !== 'default')
const body = [
  "import cjs from './index.js'",
  `export const { ${names.join(', ')} } = cjs`,
  'export default cjs',
  '',
].join('\n')
writeFileSync(new URL('../dist/index.mjs', import.meta.url), body)
