/**
 * The chunks of an HTTP/1.1 chunked body as a raw client saw them (status line, headers and body, as latin1 text),
 * one per write of the server's response; stops at the terminating zero-size chunk or where the text ends.
 */
export function chunksOf(raw: string): string[] {
  let rest = raw.slice(raw.indexOf('\r\n\r\n') + 4);
  const chunks: string[] = [];
  for (;;) {
    const lineEnd = rest.indexOf('\r\n');
    if (lineEnd === -1) return chunks;
    const size = Number.parseInt(rest.slice(0, lineEnd), 16);
    if (size === 0) return chunks;
    chunks.push(rest.slice(lineEnd + 2, lineEnd + 2 + size));
    rest = rest.slice(lineEnd + 2 + size + 2);
  }
}
