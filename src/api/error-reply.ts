/**
 * Turns anything thrown while serving a request (our errors, Fastify's parser and validator errors) into a
 * `GatewayError`, so every response body is OpenAI's error shape with the status OpenAI would use.
 */
import {
  GatewayError,
  InvalidRequestError,
  NotFoundError,
  PayloadTooLargeError,
  StoreUnavailableError,
  toGatewayError,
} from '../errors/gateway-error.js';
import { paramOfPointer } from '../errors/param-path.js';
import { isStoreUnreachable } from '../store/store-unreachable.js';

interface FastifyLikeError {
  code?: string;
  statusCode?: number;
  message?: string;
  validation?: Array<{ instancePath: string; keyword: string; params: Record<string, unknown>; message?: string }>;
}

/**
 * Maps a thrown value to the error the client sees. `contentEncoding`: the request's, for a body the JSON parser
 * refused.
 */
export function toClientError(error: unknown, bodyLimitBytes: number, contentEncoding?: string): GatewayError {
  if (error instanceof GatewayError) return error;
  const fastifyError = (error ?? {}) as FastifyLikeError;
  if (Array.isArray(fastifyError.validation) && fastifyError.validation.length > 0) {
    return validationError(fastifyError.validation);
  }
  switch (fastifyError.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new PayloadTooLargeError(bodyLimitBytes);
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new GatewayError(
        415,
        'invalid_request_error',
        'unsupported_media_type',
        "Unsupported content type: send the body as JSON with 'Content-Type: application/json'.",
        false,
      );
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new InvalidRequestError('The request body is empty; expected a JSON object.', { code: 'invalid_json' });
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return unparsableBody(contentEncoding);
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return new InvalidRequestError('We could not parse the JSON body of your request.', { code: 'invalid_json' });
    default:
      break;
  }
  // Fastify's JSON parser rethrows the parse error with a 400 status on it. A `SyntaxError` without one was thrown by
  // the gateway's own code: a fault of ours, answered 500 and logged, not blamed on the client's body.
  if (error instanceof SyntaxError && fastifyError.statusCode === 400) return unparsableBody(contentEncoding);
  if (isStoreUnreachable(error)) return new StoreUnavailableError(error);
  const status = fastifyError.statusCode;
  if (status !== undefined && status >= 400 && status < 500) {
    if (status === 404) return new NotFoundError('Not found.');
    return new GatewayError(status, 'invalid_request_error', 'invalid_request', 'The request is not valid.', false);
  }
  return toGatewayError(error);
}

/** A body the JSON parser refused; a compressed one reaches it as it came and fails there, and is told why. */
function unparsableBody(contentEncoding: string | undefined): GatewayError {
  if (contentEncoding !== undefined && contentEncoding.trim().toLowerCase() !== 'identity') {
    return new GatewayError(
      415,
      'invalid_request_error',
      'unsupported_content_encoding',
      `Unsupported Content-Encoding '${contentEncoding.slice(0, 40)}': send the JSON body uncompressed.`,
      false,
    );
  }
  return new InvalidRequestError('We could not parse the JSON body of your request.', { code: 'invalid_json' });
}

/** Keywords that only say "no branch matched": the branches' own errors, listed before them, say why. */
const UNION_KEYWORDS = new Set(['anyOf', 'oneOf']);

function validationError(problems: NonNullable<FastifyLikeError['validation']>): InvalidRequestError {
  const first = problems[0]!;
  const at = (problem: typeof first, property?: unknown) => {
    const param = paramOfPointer(problem.instancePath);
    if (typeof property !== 'string') return param;
    return param === '' ? property : `${param}.${property}`;
  };
  if (first.keyword === 'required') {
    const param = at(first, first.params.missingProperty);
    return new InvalidRequestError(`Missing required parameter: '${param}'.`, {
      param,
      code: 'missing_required_parameter',
    });
  }
  if (first.keyword === 'additionalProperties') {
    const param = at(first, first.params.additionalProperty);
    return new InvalidRequestError(`Unrecognized request argument supplied: '${param}'.`, {
      param,
      code: 'unknown_parameter',
    });
  }
  const param = at(first);
  if (param === '') {
    return new InvalidRequestError('The request body must be a JSON object.', { code: 'invalid_type' });
  }
  // A value that fails a union (`stop`: a string or up to 4 strings) fails each branch: a broken constraint of a
  // branch of the right type (`maxItems`) says more than the type of the first branch. With none, every branch's
  // type is named: "expected string, array or null".
  const constraint = problems.find((problem) => problem.keyword !== 'type' && !UNION_KEYWORDS.has(problem.keyword));
  if (constraint !== undefined && constraint.keyword !== 'required' && constraint.keyword !== 'additionalProperties') {
    const constrained = at(constraint);
    return new InvalidRequestError(`Invalid value for '${constrained}': ${constraint.message ?? 'invalid'}.`, {
      param: constrained,
      code: 'invalid_value',
    });
  }
  const types = [
    ...new Set(
      problems
        .filter((problem) => problem.keyword === 'type' && problem.instancePath === first.instancePath)
        .map((problem) => String(problem.params.type)),
    ),
  ];
  const expected = types.length <= 1 ? types.join('') : `${types.slice(0, -1).join(', ')} or ${types.at(-1)}`;
  return new InvalidRequestError(`Invalid value for '${param}': expected ${expected || 'another type'}.`, {
    param,
    code: 'invalid_type',
  });
}
