import { describe, expect, it } from 'vitest';
import type { LiveEvent } from '../api/types';
import { backoffDelay, LiveStream, liveUrl, parseFrame, type SocketLike } from './live';

class FakeSocket implements SocketLike {
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  closed: number | null = null;
  constructor(readonly url: string) {}
  close(code?: number) {
    this.closed = code ?? 1005;
  }
  send(kind: string, payload: unknown) {
    this.onmessage?.({ data: JSON.stringify({ kind, payload }) });
  }
  drop() {
    this.onclose?.({ code: 1006 });
  }
}

function harness() {
  const sockets: FakeSocket[] = [];
  const timers: { fn: () => void; ms: number; id: number }[] = [];
  let next = 1;
  const stream = new LiveStream({
    url: 'ws://h/v1/live',
    open: (url) => {
      const s = new FakeSocket(url);
      sockets.push(s);
      return s;
    },
    setTimer: (fn, ms) => {
      const id = next++;
      timers.push({ fn, ms, id });
      return id;
    },
    clearTimer: (id) => {
      const i = timers.findIndex((t) => t.id === id);
      if (i >= 0) timers.splice(i, 1);
    },
    random: () => 0.5,
    baseDelayMs: 100,
    maxDelayMs: 1000,
  });
  const fire = () => {
    const t = timers.shift();
    if (!t) throw new Error('no timer');
    t.fn();
    return t.ms;
  };
  return { stream, sockets, timers, fire };
}

describe('backoff', () => {
  it('doubles, is capped, and jitters within 20 %', () => {
    expect([0, 1, 2, 3, 10].map((a) => backoffDelay(a, 100, 1000, () => 0.5))).toEqual([100, 200, 400, 800, 1000]);
    expect(backoffDelay(0, 100, 1000, () => 0)).toBe(80);
    expect(backoffDelay(0, 100, 1000, () => 1)).toBe(120);
    expect(backoffDelay(99, 100, 1000, () => 1)).toBe(1000);
  });
});

describe('frames', () => {
  it('keeps {kind, payload} and refuses anything else', () => {
    expect(parseFrame('{"kind":"resync","payload":null}')).toEqual({ kind: 'resync', payload: null });
    expect(parseFrame('{"kind":"decision","payload":{"seq":1}}')).toEqual({ kind: 'decision', payload: { seq: 1 } });
    expect(parseFrame('{"kind":"decision"}')).toBeNull();
    expect(parseFrame('{"kind":"future","payload":3}')).toEqual({ kind: 'other', name: 'future', payload: 3 });
    expect(parseFrame('not json')).toBeNull();
    expect(parseFrame('[1]')).toBeNull();
    expect(parseFrame(new ArrayBuffer(2))).toBeNull();
  });

  it('builds the URL of the page origin', () => {
    expect(liveUrl({ protocol: 'https:', host: 'gov.example:8443' })).toBe('wss://gov.example:8443/v1/live');
    expect(liveUrl({ protocol: 'http:', host: '127.0.0.1:8480' })).toBe('ws://127.0.0.1:8480/v1/live');
  });
});

describe('the live stream', () => {
  it('delivers events after subscribing, reconnects with growing delays, and asks for a refetch', () => {
    const { stream, sockets, timers, fire } = harness();
    const events: LiveEvent[] = [];
    let resyncs = 0;
    const states: string[] = [];
    stream.onEvent((e) => events.push(e));
    stream.onResync(() => resyncs++);
    stream.onState((s) => states.push(s));
    stream.start();
    expect(sockets).toHaveLength(1);
    sockets[0]!.send('subscribed', { org_id: 'acme' });
    expect(stream.state).toBe('open');
    expect(resyncs).toBe(0);
    sockets[0]!.send('decision', { runtime_id: 'r', seq: 4 });
    expect(events).toEqual([{ kind: 'decision', payload: { runtime_id: 'r', seq: 4 } }]);

    // The server says it may have missed events.
    sockets[0]!.send('resync', null);
    expect(resyncs).toBe(1);

    // Dropped: reconnect after 100 ms, then 200 ms while it keeps failing.
    sockets[0]!.drop();
    expect(stream.state).toBe('closed');
    expect(fire()).toBe(100);
    expect(sockets).toHaveLength(2);
    sockets[1]!.drop();
    expect(fire()).toBe(200);
    expect(sockets).toHaveLength(3);
    // Back: the events missed meanwhile are only in REST.
    sockets[2]!.send('subscribed', { org_id: 'acme' });
    expect(resyncs).toBe(2);
    expect(stream.state).toBe('open');
    // A later drop starts from the base delay again.
    sockets[2]!.drop();
    expect(fire()).toBe(100);
    expect(timers).toHaveLength(0);
    expect(states).toEqual(['connecting', 'open', 'closed', 'connecting', 'closed', 'connecting', 'open', 'closed', 'connecting']);
  });

  it('stops for good: no reconnect, the socket closed normally', () => {
    const { stream, sockets, timers } = harness();
    stream.start();
    sockets[0]!.send('subscribed', { org_id: 'acme' });
    stream.stop();
    expect(sockets[0]!.closed).toBe(1000);
    sockets[0]!.drop();
    expect(timers).toHaveLength(0);
    expect(stream.state).toBe('closed');
  });

  it('ignores frames it cannot read and unsubscribes listeners', () => {
    const { stream, sockets } = harness();
    const seen: string[] = [];
    const off = stream.onEvent((e) => seen.push(e.kind));
    stream.start();
    sockets[0]!.onmessage?.({ data: '{oops' });
    sockets[0]!.send('chain_status', { runtime_id: 'r' });
    off();
    sockets[0]!.send('chain_status', { runtime_id: 'r' });
    expect(seen).toEqual(['chain_status']);
  });
});
