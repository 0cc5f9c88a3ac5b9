/**
 * undici, loaded by the first command that talks HTTP. The commands that work on the store never do, and loading it
 * at start was a tenth of their start-up (0.14 s of 1.3 s on a slow machine).
 */
export const undici = (): Promise<typeof import('undici')> => import('undici');
