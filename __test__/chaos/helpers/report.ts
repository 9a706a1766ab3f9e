import { figure } from './figures'

/**
 * `figure()`, going on after a figure that fails its criterion: AVA records the failure (the
 * test fails) and throws, and this catches the throw, so that every figure of the test is
 * printed and recorded.
 */
export function report(...args: Parameters<typeof figure>): void {
  try {
    figure(...args)
  } catch {
    // Recorded by AVA already.
  }
}
