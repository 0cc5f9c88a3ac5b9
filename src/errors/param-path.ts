/** The `param` of an OpenAI error body, from the JSON pointer a validator reports. */

/** `/messages/0/content` → `messages[0].content`, `/models/gpt-4o/rpm` → `models.gpt-4o.rpm` */
export function paramOfPointer(pointer: string): string {
  return pointer
    .split('/')
    .slice(1)
    .map((part) => part.replace(/~1/g, '/').replace(/~0/g, '~'))
    .reduce((param, part) => (/^\d+$/.test(part) ? `${param}[${part}]` : param ? `${param}.${part}` : part), '');
}
