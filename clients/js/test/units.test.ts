/** The small pieces: backoff, dedupe, the SSE parser, JWT subjects, URLs, frame checks. */

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { Backoff, fullJitterDelay } from '../src/backoff.js';
import { RecentIds } from '../src/dedupe.js';
import { decodeFrame } from '../src/frames.js';
import { nextTry } from '../src/retry.js';
import { tokenSubject } from '../src/jwt.js';
import { SseParser } from '../src/transports/sse-parser.js';
import { Endpoints, topicSegment } from '../src/urls.js';
import { jwt, randoms } from './fakes.js';

describe('backoff', () => {
  const options = (random: () => number) => ({ baseMs: 500, capMs: 30_000, random });

  it('waits between 0 and min(cap, base · 2^attempt)', () => {
    for (let attempt = 0; attempt < 12; attempt += 1) {
      const ceiling = Math.min(30_000, 500 * 2 ** attempt);
      assert.equal(fullJitterDelay(attempt, options(() => 0)), 0);
      const top = fullJitterDelay(attempt, options(() => 0.999_999));
      assert.ok(top < ceiling && top >= ceiling - 1, `attempt ${attempt}: ${top} vs ${ceiling}`);
    }
  });

  it('uses the injected random for the jitter', () => {
    assert.equal(fullJitterDelay(0, options(() => 0.5)), 250);
    assert.equal(fullJitterDelay(3, options(() => 0.25)), 1000);
    assert.equal(fullJitterDelay(20, options(() => 0.5)), 15_000);
  });

  it('grows per retry and starts again after a reset', () => {
    const backoff = new Backoff(options(() => 0.999));
    const delays = [backoff.next(), backoff.next(), backoff.next(), backoff.next()];
    assert.deepEqual(delays, [499, 999, 1998, 3996]);
    for (let i = 0; i < 100; i += 1) assert.ok(backoff.next() <= 30_000);
    backoff.reset();
    assert.equal(backoff.attempt, 0);
    assert.equal(backoff.next(), 499);
  });

  it('stays within bounds for any random value', () => {
    const random = randoms(0, 0.1, 0.5, 0.9, 0.999_999);
    const backoff = new Backoff({ baseMs: 100, capMs: 1000, random });
    for (let i = 0; i < 50; i += 1) {
      const delay = backoff.next();
      assert.ok(delay >= 0 && delay < 1000);
    }
  });
});

describe('RecentIds', () => {
  it('says whether an id is new', () => {
    const ids = new RecentIds(3);
    assert.equal(ids.add('a'), true);
    assert.equal(ids.add('a'), false);
    assert.equal(ids.has('a'), true);
  });

  it('keeps only the most recent ids, within its bound', () => {
    const ids = new RecentIds(1000);
    for (let i = 0; i < 5000; i += 1) ids.add(`id-${i}`);
    assert.equal(ids.size, 1000);
    assert.equal(ids.has('id-3999'), false);
    assert.equal(ids.has('id-4000'), true);
    assert.equal(ids.add('id-4999'), false);
  });

  it('drops the least recently seen first', () => {
    const ids = new RecentIds(2);
    ids.add('a');
    ids.add('b');
    ids.add('a'); // seen again: now newer than b
    ids.add('c');
    assert.equal(ids.has('a'), true);
    assert.equal(ids.has('b'), false);
  });
});

describe('SseParser', () => {
  it('parses events split anywhere, with CRLF, CR or LF', () => {
    const parser = new SseParser();
    const text = 'event: hello\r\ndata: {"a":1}\r\n\r\n: keepalive\n\nevent: x\rdata: 2\r\r';
    const events = [];
    for (const char of text) events.push(...parser.push(char));
    assert.deepEqual(events, [
      { event: 'hello', data: '{"a":1}', id: undefined },
      { event: 'x', data: '2', id: undefined },
    ]);
  });

  it('joins data lines, keeps the last id, skips comments and events without data', () => {
    const parser = new SseParser();
    const events = parser.push('\uFEFFid: 7\ndata: a\ndata:b\n\n: comment\nevent: empty\n\ndata\n\n');
    assert.deepEqual(events, [
      { event: 'message', data: 'a\nb', id: '7' },
      { event: 'message', data: '', id: '7' },
    ]);
  });

  it('holds an incomplete line until the rest arrives', () => {
    const parser = new SseParser();
    assert.deepEqual(parser.push('data: {"type":'), []);
    assert.deepEqual(parser.push('"pong"}\n'), []);
    assert.deepEqual(parser.push('\n'), [{ event: 'message', data: '{"type":"pong"}', id: undefined }]);
  });
});

describe('tokenSubject', () => {
  it('reads sub without verifying', () => {
    assert.equal(tokenSubject(jwt('alice')), 'alice');
    assert.equal(tokenSubject(jwt('zoë')), 'zoë');
  });

  it('is undefined for anything else', () => {
    assert.equal(tokenSubject('opaque-token'), undefined);
    assert.equal(tokenSubject('a.b.c'), undefined);
  });
});

describe('Endpoints', () => {
  it('derives WebSocket and HTTP addresses, keeping a path prefix', () => {
    const endpoints = new Endpoints('https://example.com/herald/');
    assert.equal(endpoints.ws('/ws', { token: 't', since: undefined }), 'wss://example.com/herald/ws?token=t');
    assert.equal(endpoints.http('/api/v1/stream', { since: 'X' }), 'https://example.com/herald/api/v1/stream?since=X');
    assert.equal(new Endpoints('ws://localhost:8004').http('/health'), 'http://localhost:8004/health');
    assert.equal(new Endpoints('/herald', 'http://app.test/page').origin, 'http://app.test/herald');
  });

  it('keeps topics readable in paths', () => {
    assert.equal(topicSegment('order:550e8400-e29b'), 'order:550e8400-e29b');
  });
});

describe('decodeFrame', () => {
  it('accepts known frames and skips unknown or malformed ones', () => {
    assert.deepEqual(decodeFrame('{"type":"read_all"}'), { type: 'read_all' });
    assert.equal(decodeFrame('{"type":"history","topic":"a:1"}'), undefined);
    assert.equal(decodeFrame('{"type":"read","ids":"x"}'), undefined);
    assert.equal(decodeFrame('not json'), undefined);
    assert.equal(decodeFrame('[1]'), undefined);
  });
});

describe('nextTry', () => {
  const chain = { length: 3, fallbackAfter: 3 };
  const ended = (overrides: Partial<Parameters<typeof nextTry>[1]> = {}) => ({
    code: 1006,
    opened: false,
    stable: false,
    requested: false,
    ...overrides,
  });

  it('counts failures before opening, and falls back after three in a row, at once', () => {
    const after = (level: number, failures: number) => nextTry({ level, failures }, ended(), chain);
    assert.deepEqual(after(0, 0), { level: 0, failures: 1, wait: 'backoff', fellBack: false });
    assert.deepEqual(after(0, 2), { level: 1, failures: 0, wait: 'now', fellBack: true });
    assert.deepEqual(after(2, 9), { level: 2, failures: 10, wait: 'backoff', fellBack: false });
  });

  it('does not count what the server asked for, nor the end of a stable connection', () => {
    for (const code of [1001, 4000, 4001, 4008, 4009]) {
      assert.equal(nextTry({ level: 0, failures: 2 }, ended({ code, opened: true }), chain).failures, 2);
    }
    assert.equal(nextTry({ level: 0, failures: 0 }, ended({ opened: true, stable: true }), chain).failures, 0);
    assert.equal(nextTry({ level: 0, failures: 0 }, ended({ code: 1011, opened: true }), chain).failures, 1);
  });

  it('reconnects at once when the client asked', () => {
    assert.deepEqual(nextTry({ level: 1, failures: 1 }, ended({ requested: true, opened: true }), chain), {
      level: 1,
      failures: 1,
      wait: 'now',
      fellBack: false,
    });
  });
});
