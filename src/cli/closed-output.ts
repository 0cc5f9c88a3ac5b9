/**
 * A reader that stops early (`tollgate usage … | head`) closes the pipe under a command still writing. Node reports
 * that as an `EPIPE` error on standard output and, unhandled, dies printing a stack trace. Unix tools just stop.
 */

/** From now on, a closed standard output ends the process quietly (status 0: the reader took what it wanted). */
export function exitQuietlyWhenOutputCloses(output: NodeJS.WriteStream = process.stdout): void {
  output.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code !== 'EPIPE') throw error;
    process.exit(0);
  });
}
