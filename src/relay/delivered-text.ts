/**
 * The text a stream has delivered so far, kept compact while the stream runs.
 *
 * Appending each event's text to one string (`text += piece`) makes V8 build a rope: one cons-string node per event
 * on top of the piece itself, and nothing flattens it while no one reads it (an unpriced stream is never
 * checkpointed). Here pieces are joined into one flat string every `PIECES_PER_PART` events, and the parts once more
 * when the whole text is read, so no event's text is copied more than twice before the first read. With 2,000 streams
 * of events of a few characters, held 60 s and then 120 s (`rss-streams --hold-seconds`), a stream grew by ~48 bytes
 * per event with the rope and by ~6 with parts (docs/benchmarks.md, session 19).
 */

/** Events whose pieces are joined into one flat part. */
const PIECES_PER_PART = 32;

/** Delivered text of one stream: append pieces, read the whole. */
export class DeliveredText {
  /** Flat parts, in order, each `PIECES_PER_PART` pieces joined (or, after a read, the whole text so far). */
  private readonly parts: string[] = [];
  /** Pieces not joined yet. */
  private readonly pieces: string[] = [];
  private characters = 0;

  /** Adds one event's text. */
  append(piece: string): void {
    if (piece === '') return;
    this.characters += piece.length;
    this.pieces.push(piece);
    if (this.pieces.length >= PIECES_PER_PART) {
      this.parts.push(this.pieces.join(''));
      this.pieces.length = 0;
    }
  }

  /** Characters delivered (UTF-16 code units, as `text.length`). */
  get length(): number {
    return this.characters;
  }

  /** The whole text, flat; later reads return it without copying until more is appended. */
  get text(): string {
    if (this.pieces.length > 0) {
      this.parts.push(this.pieces.join(''));
      this.pieces.length = 0;
    }
    if (this.parts.length > 1) {
      const whole = this.parts.join('');
      this.parts.length = 0;
      this.parts.push(whole);
    }
    return this.parts[0] ?? '';
  }
}
