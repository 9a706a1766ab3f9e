import { tempDir } from './helpers/env'
import { backends, remoteBackends, storeSuite } from './helpers/store-suite'

// ONE behavioural suite, run against every backend of this version, local and remote.
const dir = tempDir('store-suite')
for (const backend of [...backends(dir), ...remoteBackends(dir)]) storeSuite(backend)
