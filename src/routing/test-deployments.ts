/** Test support for the routing tests: deployments over upstreams that are never called, and a model over them. */
import type { CatalogModel, Deployment } from '../catalog/catalog.js';
import type { Upstream } from '../upstreams/upstream.js';

/** An upstream whose calls fail loudly: routing unit tests never reach it. */
export function unusedUpstream(name: string): Upstream {
  const unused = async (): Promise<never> => {
    throw new Error(`upstream ${name} must not be called in this test`);
  };
  return { name, complete: unused, stream: unused, close: async () => {} };
}

/** Deployments `<name>/m` over unused upstreams. */
export function testDeployments(...names: string[]): Deployment[] {
  return names.map((name) => ({ id: `${name}/m`, upstream: unusedUpstream(name), upstreamModel: 'm' }));
}

/** A chat model `m` over `deployments`. */
export function testModel(deployments: readonly Deployment[], name = 'm'): CatalogModel {
  return { name, kind: 'chat', contextWindow: 8192, maxOutputTokens: 1024, deployments, created: 0 };
}
