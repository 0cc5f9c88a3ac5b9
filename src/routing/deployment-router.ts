/**
 * Chooses the deployment that serves a request. For now: round-robin over a model's deployments.
 * Least-outstanding-work, health and failover arrive with the scheduler (issue 4).
 */
import type { CatalogModel, Deployment } from '../catalog/catalog.js';

/** Picks a deployment for each request. */
export class DeploymentRouter {
  private readonly cursors = new Map<string, number>();

  pick(model: CatalogModel): Deployment {
    const deployments = model.deployments;
    if (deployments.length === 1) return deployments[0]!;
    const cursor = this.cursors.get(model.name) ?? 0;
    this.cursors.set(model.name, (cursor + 1) % deployments.length);
    return deployments[cursor % deployments.length]!;
  }
}
