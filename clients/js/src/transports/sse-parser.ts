/**
 * A `text/event-stream` parser, following the HTML standard's rules: lines end with CRLF, LF or CR (a CR at
 * the end of one chunk may pair with an LF at the start of the next); a blank line dispatches; `:` starts a
 * comment; one space after the colon is dropped; `data` lines join with newlines; an event without data is
 * not dispatched. Fed decoded text in whatever chunks the network delivers.
 */

export interface SseEvent {
  /** The `event:` field, `message` when absent. */
  event: string;
  data: string;
  /** The last `id:` seen on the stream, as the standard keeps it across events. */
  id: string | undefined;
}

export class SseParser {
  private pending = '';
  private skipLeadingLf = false;
  private started = false;
  private eventType = '';
  private data: string[] = [];
  private lastId: string | undefined;

  /** Parses a chunk; returns the events it completed. */
  push(chunk: string): SseEvent[] {
    let text = chunk;
    if (!this.started && text.length > 0) {
      this.started = true;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    if (this.skipLeadingLf && text.startsWith('\n')) text = text.slice(1);
    this.skipLeadingLf = false;

    const events: SseEvent[] = [];
    let buffer = this.pending + text;
    for (;;) {
      const end = buffer.search(/[\r\n]/);
      if (end < 0) break;
      const line = buffer.slice(0, end);
      let rest = end + 1;
      if (buffer[end] === '\r') {
        if (end + 1 === buffer.length) this.skipLeadingLf = true;
        else if (buffer[end + 1] === '\n') rest += 1;
      }
      buffer = buffer.slice(rest);
      const event = this.line(line);
      if (event !== undefined) events.push(event);
    }
    this.pending = buffer;
    return events;
  }

  private line(line: string): SseEvent | undefined {
    if (line === '') return this.dispatch();
    if (line.startsWith(':')) return undefined;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    switch (field) {
      case 'event':
        this.eventType = value;
        break;
      case 'data':
        this.data.push(value);
        break;
      case 'id':
        if (!value.includes('\0')) this.lastId = value;
        break;
      default:
        // `retry` and unknown fields: the client has its own retry policy.
        break;
    }
    return undefined;
  }

  private dispatch(): SseEvent | undefined {
    const data = this.data;
    const event = this.eventType || 'message';
    this.data = [];
    this.eventType = '';
    if (data.length === 0) return undefined;
    return { event, data: data.join('\n'), id: this.lastId };
  }
}
