/**
 * The bytes of uploaded and generated files, one file per id under `<data_dir>/files/`. Uploads are streamed to a
 * `.part` file and renamed once complete, so a crash never leaves a half-written file under a real id.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';

/** The upload was larger than the limit (nothing was kept). */
export class FileTooLargeError extends Error {
  constructor(readonly limitBytes: number) {
    super(`The file exceeds ${limitBytes} bytes.`);
    this.name = 'FileTooLargeError';
  }
}

/** Files on local disk. */
export class FileStorage {
  constructor(
    /** Directory holding the files (created on first write). */
    readonly directory: string,
  ) {}

  /** Where the bytes of `id` live. */
  pathOf(id: string): string {
    if (!/^[A-Za-z0-9_-]+$/.test(id)) throw new RangeError(`Not a file id: ${JSON.stringify(id)}`);
    return path.join(this.directory, id);
  }

  /**
   * Streams `source` to the file `id`, never holding it whole in memory. Rejects with `FileTooLargeError` (and
   * keeps nothing) past `limitBytes`. Resolves with the size, bytes.
   */
  async write(id: string, source: NodeJS.ReadableStream, limitBytes: number): Promise<number> {
    await mkdir(this.directory, { recursive: true });
    const target = this.pathOf(id);
    const partial = `${target}.part`;
    let bytes = 0;
    const counter = new Transform({
      transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback) {
        bytes += chunk.length;
        if (bytes > limitBytes) callback(new FileTooLargeError(limitBytes));
        else callback(null, chunk);
      },
    });
    try {
      await pipeline(source, counter, createWriteStream(partial));
      await rename(partial, target);
      return bytes;
    } catch (error: unknown) {
      await rm(partial, { force: true });
      throw error;
    }
  }

  /** Writes the file `id` from text chunks (generated output files). Resolves with the size, bytes. */
  async writeLines(id: string, lines: AsyncIterable<string>): Promise<number> {
    await mkdir(this.directory, { recursive: true });
    const target = this.pathOf(id);
    const partial = `${target}.part`;
    try {
      await pipeline(lines, createWriteStream(partial));
      await rename(partial, target);
      return (await stat(target)).size;
    } catch (error: unknown) {
      await rm(partial, { force: true });
      throw error;
    }
  }

  /** A stream of the file's bytes. */
  read(id: string): NodeJS.ReadableStream {
    return createReadStream(this.pathOf(id));
  }

  /** Removes the file (idempotent). */
  async remove(id: string): Promise<void> {
    await rm(this.pathOf(id), { force: true });
  }
}
