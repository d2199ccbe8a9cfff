/**
 * A Server-Sent Events reader (the WHATWG "event stream" format): what the watch client and
 * the tests read `GET /v1/watch` with.
 *
 * ```ts
 * const res = await fetch(`${url}/v1/watch?prefix=a%2F&after=0`);
 * for await (const ev of readEvents(res.body!)) console.log(ev.id, ev.event, JSON.parse(ev.data));
 * ```
 */

export interface SseEvent {
  /** The `id` field, or null when the event set none. */
  readonly id: string | null;
  /** The `event` field; `message` when absent. */
  readonly event: string;
  readonly data: string;
}

/** Feeds text in; yields each event once its blank line has arrived. Comments (`:`) and
 *  `retry` are skipped. */
export class SseParser {
  private buffer = '';
  private id: string | null = null;
  private event = '';
  private data: string[] = [];

  push(text: string): SseEvent[] {
    this.buffer += text;
    const out: SseEvent[] = [];
    for (;;) {
      const nl = this.buffer.search(/\r\n|\r|\n/);
      if (nl < 0) break;
      const line = this.buffer.slice(0, nl);
      this.buffer = this.buffer.slice(nl + (this.buffer.startsWith('\r\n', nl) ? 2 : 1));
      if (line === '') {
        if (this.data.length > 0) out.push({ id: this.id, event: this.event || 'message', data: this.data.join('\n') });
        this.id = null;
        this.event = '';
        this.data = [];
        continue;
      }
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'data') this.data.push(value);
      else if (field === 'event') this.event = value;
      else if (field === 'id') this.id = value;
    }
    return out;
  }
}

/** The events of a response body, in order, until it ends. */
export async function* readEvents(body: AsyncIterable<Uint8Array>): AsyncGenerator<SseEvent> {
  const parser = new SseParser();
  const decoder = new TextDecoder();
  for await (const chunk of body) yield* parser.push(decoder.decode(chunk, { stream: true }));
}
