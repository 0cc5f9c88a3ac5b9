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
      // A compressed body reaches the JSON parser as it came and fails there: the client should hear why.
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
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return new InvalidRequestError('We could not parse the JSON body of your request.', { code: 'invalid_json' });
    default:
      break;
  }
  if (error instanceof SyntaxError) {
    return new InvalidRequestError('We could not parse the JSON body of your request.', { code: 'invalid_json' });
  }
  if (isStoreUnreachable(error)) return new StoreUnavailableError(error);
  const status = fastifyError.statusCode;
  if (status !== undefined && status >= 400 && status < 500) {
    if (status === 404) return new NotFoundError('Not found.');
    return new GatewayError(status, 'invalid_request_error', 'invalid_request', 'The request is not valid.', false);
  }
  return toGatewayError(error);
}

function validationError(problems: NonNullable<FastifyLikeError['validation']>): InvalidRequestError {
  const first = problems[0]!;
  let param = pointerToParam(first.instancePath);
  if (first.keyword === 'required' && typeof first.params.missingProperty === 'string') {
    param = param === '' ? first.params.missingProperty : `${param}.${first.params.missingProperty}`;
    return new InvalidRequestError(`Missing required parameter: '${param}'.`, {
      param,
      code: 'missing_required_parameter',
    });
  }
  if (param === '') {
    return new InvalidRequestError('The request body must be a JSON object.', { code: 'invalid_type' });
  }
  const detail = first.keyword === 'type' ? `expected ${String(first.params.type)}` : (first.message ?? 'invalid');
  return new InvalidRequestError(`Invalid value for '${param}': ${detail}.`, {
    param,
    code: first.keyword === 'type' ? 'invalid_type' : 'invalid_value',
  });
}

/** `/messages/0/content` → `messages[0].content` */
function pointerToParam(pointer: string): string {
  return pointer
    .split('/')
    .slice(1)
    .map((part) => part.replace(/~1/g, '/').replace(/~0/g, '~'))
    .reduce((param, part) => (/^\d+$/.test(part) ? `${param}[${part}]` : param ? `${param}.${part}` : part), '');
}
