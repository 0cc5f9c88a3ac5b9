/**
 * Deterministic embedding vectors: unit length, seeded by the input, rounded to float32 so the `float` and `base64`
 * encodings of one vector carry the same numbers.
 */
import { createRandom } from './simulated-text.js';

/** Vector size when a request sets no `dimensions`. */
export const defaultEmbeddingDimensions = 256;
/** Largest accepted `dimensions` (text-embedding-3-large's size is 3072; leave room). */
export const maxEmbeddingDimensions = 8192;

/** A unit-length vector of `dimensions` float32 values for `seed`. */
export function createEmbedding(seed: number, dimensions: number): Float32Array {
  const random = createRandom(seed);
  const values = new Float64Array(dimensions);
  let squares = 0;
  for (let index = 0; index < dimensions; index++) {
    // Sum of uniforms: cheap, roughly Gaussian, so directions spread over the sphere.
    const value = (random() + random() + random() + random()) / 2 ** 32 - 2;
    values[index] = value;
    squares += value * value;
  }
  const norm = Math.sqrt(squares) || 1;
  const vector = new Float32Array(dimensions);
  for (let index = 0; index < dimensions; index++) vector[index] = values[index]! / norm;
  return vector;
}

/** OpenAI's `encoding_format: "base64"`: the little-endian float32 bytes, base64-encoded. */
export function encodeEmbeddingBase64(vector: Float32Array): string {
  const bytes = Buffer.alloc(vector.length * 4);
  for (let index = 0; index < vector.length; index++) bytes.writeFloatLE(vector[index]!, index * 4);
  return bytes.toString('base64');
}
