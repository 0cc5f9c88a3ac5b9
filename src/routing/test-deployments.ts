/** Test support for the routing tests: deployments over upstreams that are never called, and a model over them. */
import type { CatalogModel, Deployment, DeploymentCapacity } from '../catalog/catalog.js';
import type { Upstream } from '../upstreams/upstream.js';

/** Capacity of the test deployments unless a test says otherwise. */
export const testCapacity: DeploymentCapacity = { sequences: 256, tokens: 262_144 };

/** An upstream whose calls fail loudly: routing unit tests never reach it. */
export function unusedUpstream(name: string): Upstream {
  const unused = async (): Promise<never> => {
    throw new Error(`upstream ${name} must not be called in this test`);
  };
  return { name, complete: unused, stream: unused, close: async () => {} };
}

/** Deployments `<name>/m` over unused upstreams, weight 1, `testCapacity`. */
export function testDeployments(...names: string[]): Deployment[] {
  return names.map((name) => ({
    id: `${name}/m`,
    upstream: unusedUpstream(name),
    upstreamModel: 'm',
    capacity: testCapacity,
    weight: 1,
  }));
}

/** A chat model `m` over `deployments`. */
export function testModel(deployments: readonly Deployment[], name = 'm'): CatalogModel {
  return { name, kind: 'chat', contextWindow: 8192, maxOutputTokens: 1024, deployments, created: 0 };
}
