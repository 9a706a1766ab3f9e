import { tempDir } from './helpers/env'
import { backends, storeSuite } from './helpers/store-suite'

// ONE behavioural suite, run against every backend of this version.
for (const backend of backends(tempDir('store-suite'))) storeSuite(backend)
