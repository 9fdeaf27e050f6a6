import { createContext, useCallback, useContext, useEffect, useRef, useState } from 'react';
import type { Me } from './api/types';
import type { LiveEvent } from './api/types';
import { LiveStream, type LiveState } from './lib/live';
import { parseRoute, pathOf, type Route } from './lib/router';
import { describeError } from './api/client';

// --- Navigation -----------------------------------------------------------------------------

type Listener = () => void;
const routeListeners = new Set<Listener>();

export function navigate(to: Route | string, replace = false): void {
  const path = typeof to === 'string' ? to : pathOf(to);
  if (replace) history.replaceState(null, '', path);
  else history.pushState(null, '', path);
  for (const l of routeListeners) l();
}

window.addEventListener('popstate', () => {
  for (const l of routeListeners) l();
});

export function useLocation(): { route: Route; search: string } {
  const read = () => ({ route: parseRoute(location.pathname), search: location.search, key: location.pathname + location.search });
  const [state, setState] = useState(read);
  useEffect(() => {
    const listener = () => setState(read());
    routeListeners.add(listener);
    return () => {
      routeListeners.delete(listener);
    };
  }, []);
  return state;
}

// --- Session and live stream ------------------------------------------------------------------

export interface AppContext {
  me: Me;
  live: LiveStream;
  logout: () => void;
}

export const Ctx = createContext<AppContext | null>(null);

export function useApp(): AppContext {
  const value = useContext(Ctx);
  if (!value) throw new Error('useApp outside the signed-in app');
  return value;
}

/** Live events of the given kinds, while the component is mounted. */
export function useLiveEvent(handler: (event: LiveEvent) => void): void {
  const { live } = useApp();
  const ref = useRef(handler);
  ref.current = handler;
  useEffect(() => live.onEvent((event) => ref.current(event)), [live]);
}

/** Called when the stream says events may have been missed (resync, or a reconnect). */
export function useResync(handler: () => void): void {
  const { live } = useApp();
  const ref = useRef(handler);
  ref.current = handler;
  useEffect(() => live.onResync(() => ref.current()), [live]);
}

export function useLiveState(): LiveState {
  const { live } = useApp();
  const [state, setState] = useState<LiveState>(live.state);
  useEffect(() => live.onState(setState), [live]);
  return state;
}

// --- Loading ------------------------------------------------------------------------------------

export interface Loaded<T> {
  data: T | null;
  error: string | null;
  loading: boolean;
  reload: () => void;
  set: (update: (old: T | null) => T | null) => void;
}

/** Loads `load()` now and whenever `deps` change; `reload` loads again keeping what is shown. */
export function useLoad<T>(load: () => Promise<T>, deps: readonly unknown[]): Loaded<T> {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [loading, setLoading] = useState(true);
  const [tick, setTick] = useState(0);
  const loadRef = useRef(load);
  loadRef.current = load;
  useEffect(() => {
    let current = true;
    setLoading(true);
    loadRef.current().then(
      (value) => {
        if (!current) return;
        setData(value);
        setError(null);
        setLoading(false);
      },
      (e: unknown) => {
        if (!current) return;
        setError(describeError(e));
        setLoading(false);
      },
    );
    return () => {
      current = false;
    };
    // `load` is read through a ref: only `deps` (and `reload`) start a new load.
  }, [...deps, tick]);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  const set = useCallback((update: (old: T | null) => T | null) => setData((old) => update(old)), []);
  return { data, error, loading, reload, set };
}

/** `Date.now()`, refreshed every `ms`, for "3 min ago" texts. */
export function useNow(ms = 15_000): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    const id = setInterval(() => setNow(Date.now()), ms);
    return () => clearInterval(id);
  }, [ms]);
  return now;
}
