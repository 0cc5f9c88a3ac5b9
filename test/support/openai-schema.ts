/**
 * Validates objects against the schemas of OpenAI's own OpenAPI document (`OPENAI_OPENAPI_PATH`, or
 * `shared/specs/openai/openapi.yaml` beside the checkout — or beside the repository it was cloned from, so a clone
 * made anywhere, e.g. `git clone . /tmp/check`, still finds it). The document mixes OpenAPI 3.0's `nullable` into 3.1; it is rewritten to plain JSON
 * Schema (2020-12) once, then compiled with Ajv.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Ajv2020Module from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import { parse } from 'yaml';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** Path of the OpenAPI document. */
export function openAPIPath(): string {
  if (process.env.OPENAI_OPENAPI_PATH !== undefined) return process.env.OPENAI_OPENAPI_PATH;
  const beside = (root: string) => path.resolve(root, '../shared/specs/openai/openapi.yaml');
  const here = beside(repoRoot);
  if (existsSync(here)) return here;
  const origin = localOrigin();
  return origin === undefined ? here : beside(origin);
}

/** The path of the `origin` remote when it is a local directory (a clone of a checkout on this machine). */
function localOrigin(): string | undefined {
  try {
    const url = execFileSync('git', ['-C', repoRoot, 'remote', 'get-url', 'origin'], { encoding: 'utf8' }).trim();
    const directory = url.startsWith('file://') ? fileURLToPath(url) : url;
    return path.isAbsolute(directory) && existsSync(directory) ? directory : undefined;
  } catch {
    // Not a git checkout, or no origin: only the shared folder beside this one counts.
    return undefined;
  }
}

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

function toJsonSchema(node: Json): Json {
  if (Array.isArray(node)) return node.map(toJsonSchema);
  if (node === null || typeof node !== 'object') return node;
  const result: { [key: string]: Json } = {};
  for (const [key, value] of Object.entries(node)) {
    if (key === '$ref' && typeof value === 'string') {
      result.$ref = value.replace('#/components/schemas/', '#/$defs/');
    } else if (key === 'nullable' || key === 'discriminator' || key === '$recursiveAnchor' || key.startsWith('x-')) {
      // dropped: handled below, or not validation keywords of JSON Schema 2020-12
    } else if (key === 'exclusiveMinimum' && typeof value === 'boolean') {
      // OpenAPI 3.0's boolean form: `minimum` then becomes exclusive.
      if (value && typeof node === 'object' && 'minimum' in node)
        result.exclusiveMinimum = (node as { minimum: Json }).minimum;
    } else if (key === 'required' && Array.isArray(value)) {
      result.required = [...new Set(value)];
    } else {
      result[key] = toJsonSchema(value);
    }
  }
  if ((node as { nullable?: unknown }).nullable === true) {
    if (typeof result.type === 'string') {
      result.type = [result.type, 'null'];
      if (Array.isArray(result.enum)) result.enum = [...result.enum, null];
    } else {
      return { anyOf: [result, { type: 'null' }] };
    }
  }
  return result;
}

// ajv is CommonJS: under NodeNext its class is the default export's `default`.
const Ajv2020 = Ajv2020Module.default;
type Ajv2020 = InstanceType<typeof Ajv2020>;

let cached: Ajv2020 | undefined;

function compiler(): Ajv2020 {
  if (cached !== undefined) return cached;
  const file = openAPIPath();
  if (!existsSync(file)) throw new Error(`OpenAI OpenAPI document not found at ${file} (set OPENAI_OPENAPI_PATH)`);
  const document = parse(readFileSync(file, 'utf8')) as { components: { schemas: { [key: string]: Json } } };
  const defs = toJsonSchema(document.components.schemas) as { [key: string]: Json };
  const ajv = new Ajv2020({ strict: false, allErrors: true, validateFormats: true, validateSchema: false });
  addFormats.default(ajv);
  // OpenAI's own format name for Unix timestamps: an integer, checked by `type`.
  ajv.addFormat('unixtime', true);
  ajv.addSchema({ $id: 'openai', $defs: defs });
  cached = ajv;
  return ajv;
}

/** Validation errors of `value` against the named schema of the OpenAPI document (empty when valid). */
export function openAIErrors(schemaName: string, value: unknown): string[] {
  const ajv = compiler();
  const validate = ajv.getSchema(`openai#/$defs/${schemaName}`);
  if (validate === undefined) throw new Error(`no schema named ${schemaName}`);
  if (validate(value)) return [];
  return (validate.errors ?? []).map((error) => `${error.instancePath || '(root)'} ${error.message ?? ''}`);
}
