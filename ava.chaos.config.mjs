// The chaos suite (`npm run test:chaos`, `npm run test:soak`): one file at a time, since its faults
// (a stopped server, a full disk, killed processes) would disturb any test running beside them.
export default {
  files: ['__test__/chaos/**/*.chaos.ts'],
  extensions: { ts: 'commonjs' },
  nodeArguments: ['--import=tsx'],
  workerThreads: false,
  timeout: '10m',
  concurrency: 1,
}
