// Runs a cargo subcommand (`test`, `clippy`…) for the host target triple in the release profile,
// exactly as `napi build --platform --release` builds the addon, so every step reuses the same
// artifacts and RocksDB compiles once per run. Usage: node scripts/cargo.mjs test [args…]
import { execFileSync, spawnSync } from 'node:child_process'

const host = /host: (\S+)/.exec(execFileSync('rustc', ['-vV'], { encoding: 'utf8' }))[1]
const [sub, ...rest] = process.argv.slice(2)
const dashdash = rest.indexOf('--')
const before = dashdash < 0 ? rest : rest.slice(0, dashdash)
const after = dashdash < 0 ? [] : rest.slice(dashdash)
const r = spawnSync('cargo', [sub, '--release', '--workspace', '--target', host, ...before, ...after], {
  stdio: 'inherit',
})
process.exit(r.status ?? 1)
