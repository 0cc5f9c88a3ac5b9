/**
 * The catalog: public model names → deployments (an upstream and the model id it knows), context windows, caps.
 */
import type { Config } from '../config/config-schema.js';
import type { Upstream, UpstreamEndpoint } from '../upstreams/upstream.js';

/** Output cap used when a model sets none, tokens. */
export const defaultMaxOutputTokens = 8192;

/** What a deployment can run at once. */
export interface DeploymentCapacity {
  /** Concurrent sequences. */
  sequences: number;
  /** Tokens in flight (prompt + max output of running requests). */
  tokens: number;
}

/** One place a public model runs. */
export interface Deployment {
  /** `upstream/model`, as shown in logs and metrics. */
  id: string;
  upstream: Upstream;
  /** The model id sent to the upstream. */
  upstreamModel: string;
  capacity: DeploymentCapacity;
  /** Routing weight. Default 1. */
  weight: number;
}

/** Capacity of an OpenAI-compatible deployment when the configuration gives none. */
export const defaultHttpCapacity: DeploymentCapacity = { sequences: 256, tokens: 1_048_576 };

/** What a model is for. */
export type ModelKind = 'chat' | 'embedding';

/** A public model. */
export interface CatalogModel {
  name: string;
  kind: ModelKind;
  /** Context window, tokens. */
  contextWindow: number;
  /** Output cap when a request sets no `max_tokens`, tokens. */
  maxOutputTokens: number;
  deployments: readonly Deployment[];
  /** Unix seconds the catalog was built, reported as the model's `created`. */
  created: number;
}

/** Public models by name. */
export class Catalog {
  private readonly models: ReadonlyMap<string, CatalogModel>;

  constructor(models: readonly CatalogModel[]) {
    this.models = new Map(models.map((model) => [model.name, model]));
  }

  /** Builds the catalog from the configuration and the upstreams created from it. */
  static fromConfig(config: Config, upstreams: ReadonlyMap<string, Upstream>, createdMs = Date.now()): Catalog {
    const created = Math.floor(createdMs / 1000);
    return new Catalog(
      config.models.map((model) => ({
        name: model.name,
        kind: model.kind,
        contextWindow: model.context_window,
        maxOutputTokens: model.max_output_tokens ?? Math.min(defaultMaxOutputTokens, model.context_window),
        created,
        deployments: model.deployments.map((deployment) => {
          const upstream = upstreams.get(deployment.upstream);
          const upstreamConfig = config.upstreams.find((candidate) => candidate.name === deployment.upstream);
          if (upstream === undefined || upstreamConfig === undefined)
            throw new Error(`unknown upstream ${deployment.upstream}`);
          const base =
            upstreamConfig.type === 'simulated'
              ? {
                  sequences: upstreamConfig.replicas * upstreamConfig.profile.max_batch,
                  tokens: upstreamConfig.replicas * upstreamConfig.profile.kv_tokens,
                }
              : defaultHttpCapacity;
          return {
            id: `${deployment.upstream}/${deployment.model}`,
            upstream,
            upstreamModel: deployment.model,
            capacity: {
              sequences: deployment.capacity?.sequences ?? base.sequences,
              tokens: deployment.capacity?.tokens ?? base.tokens,
            },
            weight: deployment.weight,
          };
        }),
      })),
    );
  }

  get(name: string): CatalogModel | undefined {
    return this.models.get(name);
  }

  list(): CatalogModel[] {
    return [...this.models.values()];
  }
}

/** A model's capacity: the sum over its deployments. */
export function modelCapacity(model: CatalogModel): DeploymentCapacity {
  return model.deployments.reduce(
    (sum, deployment) => ({
      sequences: sum.sequences + deployment.capacity.sequences,
      tokens: sum.tokens + deployment.capacity.tokens,
    }),
    { sequences: 0, tokens: 0 },
  );
}

/** Whether a model of `kind` serves `endpoint`. */
export function modelServes(kind: ModelKind, endpoint: UpstreamEndpoint): boolean {
  return kind === 'embedding' ? endpoint === 'embeddings' : endpoint !== 'embeddings';
}
