/** Creates the adapter an upstream's configuration names. The only place that knows every kind of upstream. */
import type { Clock } from '../clock/clock.js';
import type { UpstreamConfig } from '../config/config-schema.js';
import { assertNever } from '../errors/assert-never.js';
import { createOpenAICompatibleUpstream } from './openai-compatible/openai-compatible-upstream.js';
import { createSimulatedUpstream } from './simulated/simulated-upstream.js';
import type { Upstream } from './upstream.js';

/** Options of `createUpstream`. */
export interface CreateUpstreamOptions {
  /** The upstream's API key, read from the variable its `api_key_env` names. */
  apiKey?: string;
  /** Clock of simulated upstreams. Default: the wall clock. */
  clock?: Clock;
}

/** The adapter for one configured upstream. */
export function createUpstream(config: UpstreamConfig, options: CreateUpstreamOptions = {}): Upstream {
  const type = config.type;
  switch (type) {
    case 'simulated':
      return createSimulatedUpstream(config, options.clock === undefined ? {} : { clock: options.clock });
    case 'openai':
      return createOpenAICompatibleUpstream(config, options.apiKey === undefined ? {} : { apiKey: options.apiKey });
    default:
      return assertNever(type);
  }
}
