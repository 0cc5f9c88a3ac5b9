/** The configuration used when no file is found: the simulated demo fleet of the README. */
export const defaultConfigDocument = {
  server: { host: '127.0.0.1', port: 8080 },
  upstreams: [
    {
      name: 'sim',
      type: 'simulated',
      replicas: 2,
      profile: { t_prefill_us: 17, t_fixed_ms: 3.4, t_seq_ms: 0.055, max_batch: 64, kv_tokens: 262_144 },
    },
  ],
  models: [
    { name: 'sim-pro-32k', context_window: 32_768, deployments: [{ upstream: 'sim', model: 'pro-32k' }] },
    { name: 'sim-pro-128k', context_window: 131_072, deployments: [{ upstream: 'sim', model: 'pro-128k' }] },
    {
      name: 'sim-embed',
      kind: 'embedding',
      context_window: 8192,
      deployments: [{ upstream: 'sim', model: 'embed-small' }],
    },
  ],
} as const;
