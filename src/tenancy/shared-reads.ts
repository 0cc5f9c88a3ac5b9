/**
 * Concurrent reads of one key share one call, but only among callers of one generation. A service counts the changes
 * it has heard (its generation); a read that began before a change may have read what the change replaced, so a caller
 * after the change starts its own read instead of taking that one's answer.
 */
export class SharedReads<T> {
  private readonly pending = new Map<string, { generation: number; read: Promise<T> }>();

  /** The read of `key` in flight since `generation`, or a new one begun by `begin`. */
  join(key: string, generation: number, begin: () => Promise<T>): Promise<T> {
    const pending = this.pending.get(key);
    if (pending !== undefined && pending.generation === generation) return pending.read;
    const read = begin();
    this.pending.set(key, { generation, read });
    const forget = () => {
      if (this.pending.get(key)?.read === read) this.pending.delete(key);
    };
    read.then(forget, forget);
    return read;
  }
}
