/**
 * The OpenAI Batches API under `/v1/batches`, and the admin view of every tenant's batches with progress and ETA
 * under `/admin/v1/batches`.
 */
import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import type { BatchProgressView, BatchRunner } from '../batch/batch-runner.js';
import { type BatchService, type CreateBatchInput, FILE_EXPIRY_SECONDS } from '../batch/batch-service.js';
import { UnavailableError } from '../errors/gateway-error.js';
import { openAIList } from '../store/list-page.js';
import { pageLimit } from './page-limit.js';

const CreateBatchBody = Type.Object(
  {
    input_file_id: Type.String({ minLength: 1 }),
    endpoint: Type.String({ minLength: 1 }),
    completion_window: Type.String({ minLength: 1 }),
    metadata: Type.Optional(
      Type.Union([
        Type.Record(Type.String({ maxLength: 64 }), Type.String({ maxLength: 512 }), { maxProperties: 16 }),
        Type.Null(),
      ]),
    ),
    output_expires_after: Type.Optional(
      Type.Object({ anchor: Type.Literal('created_at'), seconds: Type.Integer(FILE_EXPIRY_SECONDS) }),
    ),
  },
  { additionalProperties: false },
);

/** Batch API services; undefined when batches are disabled. */
export interface BatchRouteServices {
  service: BatchService;
  runner: BatchRunner;
}

function required(batches: BatchRouteServices | undefined): BatchRouteServices {
  if (batches === undefined) throw new UnavailableError('The Batches API is not enabled on this gateway.');
  return batches;
}

/** Registers `/v1/batches`. */
export function registerBatchesRoutes(app: FastifyInstance, batches: BatchRouteServices | undefined): void {
  app.post<{ Body: CreateBatchInput }>('/v1/batches', { schema: { body: CreateBatchBody } }, async (request) => {
    const { service } = required(batches);
    return service.view(await service.createBatch(request.principal!, request.body));
  });

  app.get<{ Params: { id: string } }>('/v1/batches/:id', async (request) => {
    const { service } = required(batches);
    return service.view(await service.getBatch(request.principal!.tenantId, request.params.id));
  });

  app.get<{ Querystring: Record<string, string | undefined> }>('/v1/batches', async (request) => {
    const { service } = required(batches);
    const { after } = request.query;
    const page = await service.listBatches({
      tenantId: request.principal!.tenantId,
      limit: pageLimit(request.query.limit, 20, 100),
      ...(after === undefined ? {} : { after }),
    });
    return openAIList(await Promise.all(page.rows.map((batch) => service.view(batch))), page.hasMore);
  });

  app.post<{ Params: { id: string } }>('/v1/batches/:id/cancel', async (request) => {
    const { service } = required(batches);
    return service.view(await service.cancelBatch(request.principal!.tenantId, request.params.id));
  });
}

/** Registers `/admin/v1/batches` on the admin scope (already guarded by the admin token). */
export function registerAdminBatchRoutes(admin: FastifyInstance, batches: BatchRouteServices | undefined): void {
  admin.get<{ Querystring: Record<string, string | undefined> }>('/batches', async (request) => {
    const { service, runner } = required(batches);
    const { after, tenant_id: tenantId } = request.query;
    const page = await service.listBatches({
      limit: pageLimit(request.query.limit, 100, 1000),
      ...(tenantId === undefined ? {} : { tenantId }),
      ...(after === undefined ? {} : { after }),
    });
    const data = await Promise.all(
      page.rows.map(async (batch) => ({
        ...(await service.view(batch)),
        tenant_id: batch.tenantId,
        progress: progressView(await runner.progressOf(batch)),
      })),
    );
    return openAIList(data, page.hasMore);
  });

  admin.get<{ Params: { id: string } }>('/batches/:id', async (request) => {
    const { service, runner } = required(batches);
    const batch = await service.getBatch(undefined, request.params.id);
    return {
      ...(await service.view(batch)),
      tenant_id: batch.tenantId,
      progress: progressView(await runner.progressOf(batch)),
    };
  });
}

/** The admin API's snake_case view of a batch's progress. */
function progressView(progress: BatchProgressView) {
  return {
    lines_done: progress.linesDone,
    lines_total: progress.linesTotal,
    lines_outstanding: progress.linesOutstanding,
    tokens_used: progress.tokensUsed,
    tokens_remaining: progress.tokensRemaining,
    tokens_per_second: progress.tokensPerSecond,
    eta_seconds: progress.etaSeconds,
  };
}
