import test from 'ava'
import { tempDir, uniqueNamespace } from './helpers/env'
import { backends, remoteBackends } from './helpers/store-suite'

// A namespace reaches the core as its WTF-8 bytes (docs/key-encoding.md): names that a UTF-8
// conversion would make equal ('\uD800', '\uDBFF' and '\uFFFD' all become U+FFFD) stay apart.
const dir = tempDir('namespaces')
for (const b of [...backends(dir), ...remoteBackends(dir)]) {
  test(`namespaces that differ only in a lone surrogate never share entries (${b.name})`, async (t) => {
    const base = uniqueNamespace(`lone-${b.name.replace(/\W/g, '')}`)
    const names = [`${base}\uD800`, `${base}\uDBFF`, `${base}\uFFFD`, `${base}\uD83D\uDE00`, `${base}\uDE00\uD83D`]
    const fs = names.map((namespace, i) => b.memoize((x: number) => `${i}:${x}`, { namespace }))
    for (const f of fs) await f(1)
    const read = await Promise.all(fs.map((f) => f.peek(1)))
    t.deepEqual(read, names.map((_, i) => `${i}:1`))
    for (const f of fs) t.like(await f.stats(), { computations: 1 })
  })
}
