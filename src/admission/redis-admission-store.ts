import { performance } from 'node:perf_hooks';
import { Redis, type RedisOptions } from 'ioredis';
import { type Clock, RealClock } from '../clock/clock.js';
import { assertNever } from '../errors/assert-never.js';
import type { Logger } from '../observability/logger.js';
import { ACQUIRE_SCRIPT, ADJUST_SCRIPT } from './admission-scripts.js';
import {
  type AcquireRequest,
  type AcquireResult,
  type AdmissionFailurePolicy,
  type AdmissionStore,
  AdmissionStoreUnavailableError,
  type AdmissionTicket,
  type RateLimitState,
  type WindowState,
} from './admission-store.js';
import { type LimitField, type RateWindow, type RateWindowOptions, rateWindow } from './limits.js';
import { MemoryAdmissionStore } from './memory-admission-store.js';

/** The log lines the store writes (a pino logger fits). */
export type AdmissionLogger = Pick<Logger, 'warn' | 'info'>;

/** Options of `RedisAdmissionStore`. */
export interface RedisAdmissionStoreOptions extends RateWindowOptions {
  /** Redis URL (`redis://127.0.0.1:6379/0`) or ioredis connection options. */
  redis: string | RedisOptions;
  /**
   * Prefix of every key. Default `tg:`. Keys read `<prefix>{<tenant id>}:<r|t|d|c>:<scope id>`; the braces are the
   * Redis Cluster hash tag, so tenant ids must not contain `{` or `}`.
   */
  keyPrefix?: string;
  /**
   * Source of time. Default: none, the scripts read Redis `TIME`, one clock for every process (production). Passing
   * a clock makes the caller's time authoritative (tests drive a `VirtualClock` this way).
   */
  clock?: Clock;
  /** What to do while Redis is unreachable. Default `closed` (refuse with `AdmissionStoreUnavailableError`). */
  failurePolicy?: AdmissionFailurePolicy;
  /** Per-command timeout, ms, so a hung Redis cannot hang requests. Default 250. */
  commandTimeoutMs?: number;
  /**
   * During an outage, requests skip Redis (fail fast, closed or open) except one probe per this interval, ms; a
   * reconnection ends the wait at once. Default 1000.
   */
  probeIntervalMs?: number;
  /** Upper bound of a concurrency refusal's `retryAfterMs`, ms. Default 1000. */
  concurrencyRetryMs?: number;
  /** Where outage warnings go (once per outage) and recoveries. Default: nowhere. */
  logger?: AdmissionLogger;
}

/** The scripts as ioredis commands (`defineCommand`: EVALSHA, falling back to EVAL once per connection). */
interface AdmissionCommands {
  tollgateAcquire(numberOfKeys: number, ...keysAndArguments: Array<string | number>): Promise<number[]>;
  tollgateAdjust(numberOfKeys: number, ...keysAndArguments: Array<string | number>): Promise<number>;
}

const reasons: readonly LimitField[] = ['rpm', 'tpm', 'tpd', 'concurrency'];
// Server replies that mean "unavailable now", not "this script is wrong".
const UNAVAILABLE_REPLY = /^(LOADING|BUSY|MASTERDOWN|READONLY|CLUSTERDOWN|TRYAGAIN|NOREPLICAS)\b/;

/**
 * The cluster-mode `AdmissionStore`: counters in Redis, one Lua script call (one round trip) per acquire, so any
 * number of gateway processes sharing the Redis enforce the limits of one. All keys of a request carry the tenant's
 * hash tag and expire on their own (windows after `windowMs + 2 × bucketMs`, days an hour after midnight UTC, lease
 * sets after the longest lease), so nothing needs cleaning up.
 *
 * When Redis is unreachable (connection refused or lost, command timeout, loading/read-only replies), `closed`
 * refuses every acquire with `AdmissionStoreUnavailableError` (the caller answers 503) and `open` admits against a
 * per-process `MemoryAdmissionStore` (limits then hold per process only), logging one warning per outage. Tickets
 * keep going to the store that issued them. The client reconnects in the background and the store returns to Redis
 * as soon as a command succeeds. Reconcile, release and rollback never throw for an outage: they log, and leases
 * expire by themselves.
 */
export class RedisAdmissionStore implements AdmissionStore {
  private readonly redis: Redis;
  private readonly commands: AdmissionCommands;
  private readonly window: RateWindow;
  private readonly prefix: string;
  private readonly clock: Clock | undefined;
  private readonly policy: AdmissionFailurePolicy;
  private readonly probeIntervalMs: number;
  private readonly concurrencyRetryMs: number;
  private readonly logger: AdmissionLogger | undefined;
  private readonly ticketPrefix = `r${Math.random().toString(36).slice(2, 12)}-`;
  private readonly localTickets = new WeakSet<AdmissionTicket>();
  private local: MemoryAdmissionStore | undefined;
  private sequence = 0;
  private inOutage = false;
  private nextProbeAt = 0;

  constructor(options: RedisAdmissionStoreOptions) {
    this.window = rateWindow(options);
    this.prefix = options.keyPrefix ?? 'tg:';
    this.clock = options.clock;
    this.policy = options.failurePolicy ?? 'closed';
    this.probeIntervalMs = options.probeIntervalMs ?? 1000;
    this.concurrencyRetryMs = options.concurrencyRetryMs ?? 1000;
    this.logger = options.logger;
    const commandTimeout = options.commandTimeoutMs ?? 250;
    const connection: RedisOptions = {
      lazyConnect: true,
      // Fail at once while disconnected instead of queueing: the failure policy decides, not a queue.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      // An acquire resent after a reconnection could take twice.
      autoResendUnfulfilledCommands: false,
      commandTimeout,
      connectTimeout: Math.max(1000, commandTimeout * 4),
      retryStrategy: (attempt) => Math.min(50 * 2 ** attempt, 1000),
    };
    this.redis =
      typeof options.redis === 'string'
        ? new Redis(options.redis, connection)
        : new Redis({ ...options.redis, ...connection });
    this.redis.defineCommand('tollgateAcquire', { lua: ACQUIRE_SCRIPT });
    this.redis.defineCommand('tollgateAdjust', { lua: ADJUST_SCRIPT });
    this.commands = this.redis as unknown as AdmissionCommands;
    this.redis.on('error', (error: unknown) => this.enterOutage(error));
    this.redis.on('ready', () => {
      this.nextProbeAt = 0;
    });
  }

  /**
   * Connects. A failure does not throw: the store starts in an outage (following its policy) and keeps reconnecting
   * in the background.
   */
  async connect(): Promise<void> {
    try {
      await this.redis.connect();
    } catch (error: unknown) {
      this.enterOutage(error);
    }
  }

  async acquire(request: AcquireRequest): Promise<AcquireResult> {
    checkTokens(request.tokens);
    const scopes = request.scopes;
    // A request no scope limits touches no counter: no round trip, and nothing for an outage to refuse.
    if (scopes.length === 0) return this.unlimited(request);
    if (this.inOutage && performance.now() < this.nextProbeAt) return this.degradedAcquire(request, undefined);
    const keysAndArguments: Array<string | number> = [];
    for (const scope of scopes) this.pushKeys(keysAndArguments, request.tenantId, scope.id);
    const callerNow = this.clock?.now();
    const ticketId = `${this.ticketPrefix}${++this.sequence}`;
    keysAndArguments.push(
      callerNow ?? '',
      this.window.bucketMs,
      this.window.buckets,
      request.tokens,
      Math.ceil(request.leaseMs),
      ticketId,
      this.concurrencyRetryMs,
    );
    for (const scope of scopes) {
      const limits = scope.limits;
      keysAndArguments.push(limits.rpm ?? '', limits.tpm ?? '', limits.tpd ?? '', limits.concurrency ?? '');
    }
    let reply: number[];
    try {
      reply = await this.commands.tollgateAcquire(scopes.length * 4, ...keysAndArguments);
    } catch (error: unknown) {
      if (!isUnavailable(error)) throw error;
      this.enterOutage(error);
      return this.degradedAcquire(request, error);
    }
    this.leaveOutage();
    const state = stateFromReply(reply);
    if (reply[0] === 1) {
      const ticket: AdmissionTicket = {
        id: ticketId,
        tenantId: request.tenantId,
        at: callerNow ?? reply[1]!,
        scopes,
        chargedTokens: request.tokens,
        leaseHeld: true,
        rolledBack: false,
      };
      return { ok: true, ticket, state };
    }
    return {
      ok: false,
      reason: reasons[reply[2]! - 1]!,
      scope: scopes[reply[3]! - 1]!.id,
      retryAfterMs: reply[4]!,
      state,
    };
  }

  async reconcile(ticket: AdmissionTicket, actualTokens: number): Promise<void> {
    checkTokens(actualTokens);
    if (this.localTickets.has(ticket)) return this.local!.reconcile(ticket, actualTokens);
    if (ticket.rolledBack || actualTokens === ticket.chargedTokens) return;
    if (await this.adjust(ticket, 0, actualTokens - ticket.chargedTokens, false)) ticket.chargedTokens = actualTokens;
  }

  async release(ticket: AdmissionTicket): Promise<void> {
    if (this.localTickets.has(ticket)) return this.local!.release(ticket);
    if (!ticket.leaseHeld) return;
    ticket.leaseHeld = false;
    if (ticket.scopes.some((scope) => scope.limits.concurrency !== undefined)) await this.adjust(ticket, 0, 0, true);
  }

  async rollback(ticket: AdmissionTicket): Promise<void> {
    if (this.localTickets.has(ticket)) return this.local!.rollback(ticket);
    if (ticket.rolledBack) return;
    const undone = await this.adjust(ticket, -1, -ticket.chargedTokens, ticket.leaseHeld);
    if (undone) {
      ticket.rolledBack = true;
      ticket.leaseHeld = false;
      ticket.chargedTokens = 0;
    }
  }

  async close(): Promise<void> {
    await this.local?.close();
    if (this.redis.status === 'end') return;
    try {
      await this.redis.quit();
    } catch {
      // Quitting a connection that is down fails; dropping it is all that is left to do.
      this.redis.disconnect();
    }
  }

  /** Whether the store currently considers Redis unreachable. */
  get unavailable(): boolean {
    return this.inOutage;
  }

  private unlimited(request: AcquireRequest): AcquireResult {
    const ticket: AdmissionTicket = {
      id: `${this.ticketPrefix}${++this.sequence}`,
      tenantId: request.tenantId,
      at: this.clock?.now() ?? Date.now(),
      scopes: request.scopes,
      chargedTokens: request.tokens,
      leaseHeld: true,
      rolledBack: false,
    };
    return { ok: true, ticket, state: {} };
  }

  private pushKeys(target: Array<string | number>, tenantId: string, scopeId: string): void {
    const base = `${this.prefix}{${tenantId}}:`;
    target.push(`${base}r:${scopeId}`, `${base}t:${scopeId}`, `${base}d:${scopeId}`, `${base}c:${scopeId}`);
  }

  /** Runs the adjust script; false (after logging) when Redis is unreachable. */
  private async adjust(
    ticket: AdmissionTicket,
    requestDelta: number,
    tokenDelta: number,
    releaseLease: boolean,
  ): Promise<boolean> {
    if (ticket.scopes.length === 0) return true;
    const keysAndArguments: Array<string | number> = [];
    for (const scope of ticket.scopes) this.pushKeys(keysAndArguments, ticket.tenantId, scope.id);
    keysAndArguments.push(
      this.clock?.now() ?? '',
      this.window.bucketMs,
      this.window.buckets,
      ticket.at,
      requestDelta,
      tokenDelta,
      releaseLease ? '1' : '0',
      ticket.id,
    );
    for (const scope of ticket.scopes) {
      const limits = scope.limits;
      keysAndArguments.push(
        `${limits.rpm === undefined ? '' : 'r'}${limits.tpm === undefined ? '' : 't'}` +
          `${limits.tpd === undefined ? '' : 'd'}${limits.concurrency === undefined ? '' : 'c'}`,
      );
    }
    try {
      await this.commands.tollgateAdjust(ticket.scopes.length * 4, ...keysAndArguments);
      return true;
    } catch (error: unknown) {
      if (!isUnavailable(error)) throw error;
      this.enterOutage(error);
      this.logger?.warn(
        { ticket: ticket.id, requestDelta, tokenDelta, releaseLease },
        'admission store: adjustment lost while Redis is unreachable (leases expire by themselves)',
      );
      return false;
    }
  }

  private degradedAcquire(request: AcquireRequest, cause: unknown): Promise<AcquireResult> {
    switch (this.policy) {
      case 'closed':
        return Promise.reject(new AdmissionStoreUnavailableError({ cause }));
      case 'open': {
        this.local ??= new MemoryAdmissionStore({
          clock: this.clock ?? new RealClock(),
          windowMs: this.window.windowMs,
          bucketMs: this.window.bucketMs,
          concurrencyRetryMs: this.concurrencyRetryMs,
        });
        const result = this.local.acquireNow(request);
        if (result.ok) this.localTickets.add(result.ticket);
        return Promise.resolve(result);
      }
      default:
        return assertNever(this.policy);
    }
  }

  private enterOutage(error: unknown): void {
    this.nextProbeAt = performance.now() + this.probeIntervalMs;
    if (this.inOutage) return;
    this.inOutage = true;
    this.logger?.warn(
      { err: error, policy: this.policy },
      this.policy === 'open'
        ? 'admission store: Redis unreachable, enforcing limits per process until it is back'
        : 'admission store: Redis unreachable, refusing requests until it is back',
    );
  }

  private leaveOutage(): void {
    if (!this.inOutage) return;
    this.inOutage = false;
    this.logger?.info({ policy: this.policy }, 'admission store: Redis reachable again');
  }
}

/** Creates a `RedisAdmissionStore` and connects it (see `RedisAdmissionStore.connect`). */
export async function createRedisAdmissionStore(options: RedisAdmissionStoreOptions): Promise<RedisAdmissionStore> {
  const store = new RedisAdmissionStore(options);
  await store.connect();
  return store;
}

function stateFromReply(reply: number[]): RateLimitState {
  const state: RateLimitState = {};
  const requests = windowFromReply(reply, 5);
  const tokens = windowFromReply(reply, 8);
  const tokensPerDay = windowFromReply(reply, 11);
  if (requests !== undefined) state.requests = requests;
  if (tokens !== undefined) state.tokens = tokens;
  if (tokensPerDay !== undefined) state.tokensPerDay = tokensPerDay;
  return state;
}

function windowFromReply(reply: number[], offset: number): WindowState | undefined {
  const limit = reply[offset]!;
  if (limit === -1) return undefined;
  return { limit, remaining: reply[offset + 1]!, resetMs: reply[offset + 2]! };
}

function isUnavailable(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  if (error.name === 'ReplyError') return UNAVAILABLE_REPLY.test(error.message);
  return true;
}

function checkTokens(tokens: number): void {
  if (!Number.isInteger(tokens) || tokens < 0) throw new RangeError(`tokens must be an integer ≥ 0, got ${tokens}`);
}
