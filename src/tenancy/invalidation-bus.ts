/** Receives the id of a key whose cached authentication must be dropped. */
export type KeyInvalidationHandler = (keyId: string) => void;

/**
 * Broadcasts key revocations to every `KeyService` cache: in-process here; cluster mode adds Redis pub/sub (or
 * node:cluster IPC) implementations, so a revoke in one process reaches the others.
 */
export interface InvalidationBus {
  /** Announces that `keyId` changed; resolves when local subscribers have run (remote delivery is best effort). */
  publish(keyId: string): Promise<void>;
  /** Registers a handler; returns a function that unregisters it. */
  subscribe(handler: KeyInvalidationHandler): () => void;
}

/** Delivers synchronously to the subscribers of this process. */
export class InProcessInvalidationBus implements InvalidationBus {
  private readonly handlers = new Set<KeyInvalidationHandler>();

  async publish(keyId: string): Promise<void> {
    for (const handler of this.handlers) handler(keyId);
  }

  subscribe(handler: KeyInvalidationHandler): () => void {
    this.handlers.add(handler);
    return () => {
      this.handlers.delete(handler);
    };
  }
}
