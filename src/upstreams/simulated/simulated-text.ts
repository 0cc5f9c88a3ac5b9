/**
 * Deterministic text of an exact token count under the gateway's tokenizer, so the simulated upstream's reported
 * usage and any recount of its output agree.
 *
 * Every piece is one o200k_base token and starts a new pre-token (a word with its leading space, or a punctuation
 * mark after a word), so BPE never merges across pieces and the count of the joined text is the count of pieces.
 */
import { countTextTokens } from '../../metering/token-counter.js';
import { createSeededRandom } from '../../scheduling/seeded-random.js';

const candidateWords = (
  'the of and to in is that it for was on are as with his they at be this have from or one had by but not what ' +
  'all were we when your can said there use an each which she do how their if will up other about out many then ' +
  'them these so some her would make like him into time has look two more write go see number no way could people ' +
  'my than first water been call who oil its now find long down day did get come made may part over new sound take ' +
  'only little work know place year live me back give most very after thing our just name good sentence man think ' +
  'say great where help through much before line right too mean old any same tell boy follow came want show also ' +
  'around form three small set put end does another well large must big even such because turn here why ask went ' +
  'men read need land different home us move try kind hand picture again change off play spell air away animal ' +
  'house point page letter mother answer found study still learn should world high every near add food between own ' +
  'below country plant last school father keep tree never start city earth eye light thought head under story saw ' +
  'left few while along might close something seem next hard open example begin life always those both paper ' +
  'together got group often run important until children side feet car mile night walk white sea began grow took ' +
  'river four carry state once book hear stop without second later miss idea enough eat face watch far really ' +
  'almost let above girl sometimes mountains cut young talk soon list song being leave family model server token ' +
  'request queue batch memory cache replica latency'
).split(' ');

const capitalize = (word: string) => word.charAt(0).toUpperCase() + word.slice(1);
const isOneToken = (piece: string) => countTextTokens(piece) === 1;

/** Words that are one token both as ` word` and ` Word` (and `Word` at the very start of the text). */
const words: readonly string[] = candidateWords.filter(
  (word) => isOneToken(` ${word}`) && isOneToken(` ${capitalize(word)}`) && isOneToken(capitalize(word)),
);
if (words.length < 128) throw new Error(`simulated-text: only ${words.length} single-token words in the vocabulary`);
for (const mark of ['.', ',']) if (!isOneToken(mark)) throw new Error(`simulated-text: "${mark}" is not one token`);

/** The single-token words the generator draws from (lower case, without the leading space). */
export const simulatedVocabulary: readonly string[] = words;

/** A 32-bit seed from any string (FNV-1a), e.g. the prompt, so the same request yields the same text. */
export function seedFromText(text: string): number {
  let hash = 0x811c9dc5;
  for (let index = 0; index < text.length; index++) {
    hash ^= text.charCodeAt(index);
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}

/** The scheduler's seeded generator (mulberry32) as integers in [0, 2^32): the same sequence, exactly scaled. */
export function createRandom(seed: number): () => number {
  const next = createSeededRandom(seed);
  return () => next() * 4_294_967_296;
}

/**
 * The text as `tokenCount` pieces of exactly one token each, in order: `generateTokens(s, n).join('')` is
 * `generateText(s, n)`. Sentences of 4–15 words start with a capital and end with `.`, with an occasional `,`.
 */
export function generateTokens(seed: number, tokenCount: number): string[] {
  const random = createRandom(seed);
  const pieces: string[] = [];
  let wordsLeftInSentence = 0;
  let afterWord = false;
  while (pieces.length < tokenCount) {
    if (afterWord && wordsLeftInSentence === 0) {
      pieces.push('.');
      afterWord = false;
      continue;
    }
    if (afterWord && random() % 12 === 0) {
      pieces.push(',');
      afterWord = false;
      continue;
    }
    const sentenceStart = wordsLeftInSentence === 0;
    if (sentenceStart) wordsLeftInSentence = 4 + (random() % 12);
    const word = words[random() % words.length]!;
    const shaped = sentenceStart ? capitalize(word) : word;
    pieces.push(pieces.length === 0 ? shaped : ` ${shaped}`);
    wordsLeftInSentence--;
    afterWord = true;
  }
  return pieces;
}

/** Deterministic text of exactly `tokenCount` o200k_base tokens for `seed`. */
export function generateText(seed: number, tokenCount: number): string {
  return generateTokens(seed, tokenCount).join('');
}
