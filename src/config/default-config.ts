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
  // Real-world prices of 2024 for the simulated models, yuan per million tokens.
  pricing: {
    currency: 'CNY',
    versions: [
      {
        id: 'launch',
        effective_from: '2024-05-15T00:00:00Z',
        models: {
          'sim-pro-32k': { input: '0.8', output: '2' },
          'sim-pro-128k': { input: '5', output: '9' },
          'sim-embed': { input: '0.5', output: '0' },
        },
        modifiers: { batch: { discount: '0.5' } },
        // Operator cost per million tokens: a replica at ~12 yuan/hour decoding ~9,000 tokens/s (DESIGN.md's profile at
        // batch 64) costs ~0.37 yuan per million output tokens; prefill is ~17 µs/token, ~0.06 per million input.
        costs: {
          'sim/pro-32k': { per_million_input: '0.06', per_million_output: '0.37' },
          'sim/pro-128k': { per_million_input: '0.06', per_million_output: '0.37' },
          'sim/embed-small': { per_million_input: '0.06', per_million_output: '0' },
        },
      },
    ],
  },
} as const;
