// The live stream `/v1/live`: one WebSocket per page, reconnected with exponential backoff
// and jitter when it drops; `resync` (the server may have missed events) and every reconnect
// tell subscribers to refetch over REST, since events sent meanwhile are not replayed.

import type { LiveEvent } from '../api/types';

export type LiveState = 'connecting' | 'open' | 'closed';

export interface SocketLike {
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  close(code?: number): void;
}

export interface LiveOptions {
  url: string;
  open: (url: string) => SocketLike;
  setTimer: (fn: () => void, ms: number) => unknown;
  clearTimer: (handle: unknown) => void;
  random?: () => number;
  baseDelayMs?: number;
  maxDelayMs?: number;
}

/** The wait before reconnect attempt `attempt` (0-based): doubling, capped, with ±20 % jitter. */
export function backoffDelay(attempt: number, base: number, max: number, random: () => number): number {
  const raw = Math.min(max, base * 2 ** Math.min(attempt, 20));
  const jitter = 0.8 + 0.4 * random();
  return Math.round(Math.min(max, raw * jitter));
}

/** A frame as an event; `null` for anything that is not `{kind, payload}` JSON. */
export function parseFrame(data: unknown): LiveEvent | null {
  if (typeof data !== 'string') return null;
  let value: unknown;
  try {
    value = JSON.parse(data);
  } catch {
    return null;
  }
  if (typeof value !== 'object' || value === null) return null;
  const { kind, payload } = value as { kind?: unknown; payload?: unknown };
  if (typeof kind !== 'string') return null;
  switch (kind) {
    case 'subscribed':
    case 'decision':
    case 'runtime_status':
    case 'chain_status':
    case 'resync':
    case 'policy':
    case 'runtime_policy':
      if (kind !== 'resync' && (typeof payload !== 'object' || payload === null)) return null;
      return { kind, payload } as LiveEvent;
    default:
      return { kind: 'other', name: kind, payload };
  }
}

type EventListener = (event: LiveEvent) => void;
type ResyncListener = () => void;
type StateListener = (state: LiveState) => void;

export class LiveStream {
  private socket: SocketLike | null = null;
  private timer: unknown = null;
  private attempt = 0;
  private stopped = true;
  private everSubscribed = false;
  private readonly events = new Set<EventListener>();
  private readonly resyncs = new Set<ResyncListener>();
  private readonly states = new Set<StateListener>();
  state: LiveState = 'closed';

  constructor(private readonly options: LiveOptions) {}

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.connect();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== null) this.options.clearTimer(this.timer);
    this.timer = null;
    const socket = this.socket;
    this.socket = null;
    if (socket) {
      socket.onclose = null;
      socket.close(1000);
    }
    this.setState('closed');
  }

  onEvent(listener: EventListener): () => void {
    this.events.add(listener);
    return () => this.events.delete(listener);
  }

  onResync(listener: ResyncListener): () => void {
    this.resyncs.add(listener);
    return () => this.resyncs.delete(listener);
  }

  onState(listener: StateListener): () => void {
    this.states.add(listener);
    return () => this.states.delete(listener);
  }

  private setState(state: LiveState): void {
    if (this.state === state) return;
    this.state = state;
    for (const listener of this.states) listener(state);
  }

  private connect(): void {
    this.timer = null;
    this.setState('connecting');
    let socket: SocketLike;
    try {
      socket = this.options.open(this.options.url);
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.socket = socket;
    socket.onmessage = (message) => {
      const event = parseFrame(message.data);
      if (!event) return;
      if (event.kind === 'subscribed') {
        this.attempt = 0;
        this.setState('open');
        // After a reconnect, what happened while the stream was down is only in REST.
        if (this.everSubscribed) this.emitResync();
        this.everSubscribed = true;
        return;
      }
      if (event.kind === 'resync') {
        this.emitResync();
        return;
      }
      for (const listener of this.events) listener(event);
    };
    socket.onerror = () => {};
    socket.onclose = () => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (!this.stopped) this.scheduleReconnect();
    };
  }

  private emitResync(): void {
    for (const listener of this.resyncs) listener();
  }

  private scheduleReconnect(): void {
    this.setState('closed');
    const delay = backoffDelay(
      this.attempt,
      this.options.baseDelayMs ?? 500,
      this.options.maxDelayMs ?? 30_000,
      this.options.random ?? Math.random,
    );
    this.attempt += 1;
    this.timer = this.options.setTimer(() => this.connect(), delay);
  }
}

/** The stream's URL for the page's own origin. */
export function liveUrl(location: { protocol: string; host: string }): string {
  return `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}/v1/live`;
}
