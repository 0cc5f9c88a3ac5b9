/**
 * Receives what changed: the id of a key whose cached authentication must be dropped, or one of the
 * `ConfigSubject`s.
 */
export type KeyInvalidationHandler = (subject: string) => void;

/** Shared configuration whose cached copies every process reloads when it changes. */
export const ConfigSubject = {
  /** The price book (a version was added through the admin API). */
  prices: 'config:prices',
  /** Budgets of tenants and keys. */
  budgets: 'config:budgets',
  /**
   * Anything may have changed: a bus that lost its connection missed what was published meanwhile. Subscribers drop
   * or reload everything they cache.
   */
  all: 'config:all',
} as const;

/**
 * Broadcasts changes to cached state — key revocations (every `KeyService` cache) and `ConfigSubject`s (the
 * billing service's price book and budgets): in-process here; cluster mode adds Redis pub/sub (or node:cluster IPC)
 * implementations, so a change made through one process reaches the others.
 */
export interface InvalidationBus {
  /**
   * Announces that `subject` changed; resolves when local subscribers have run. Remote delivery is best effort: a
   * failure to send is logged, never thrown (the change is stored; cache lifetimes and refreshes bound the staleness).
   */
  publish(subject: string): Promise<void>;
  /** Registers a handler; returns a function that unregisters it. */
  subscribe(handler: KeyInvalidationHandler): () => void;
}

/** Delivers synchronously to the subscribers of this process. */
export class InProcessInvalidationBus implements InvalidationBus {
  private readonly handlers = new Set<KeyInvalidationHandler>();

  async publish(subject: string): Promise<void> {
    for (const handler of this.handlers) handler(subject);
  }

  subscribe(handler: KeyInvalidationHandler): () => void {
    this.handlers.add(handler);
    return () => {
      this.handlers.delete(handler);
    };
  }
}
