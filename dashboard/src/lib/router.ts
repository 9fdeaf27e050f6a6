// The app's routes: a few patterns matched against `location.pathname`. A router package would
// bring more than the eight screens need; this is the whole of it, and it is unit tested.

export type Route =
  | { name: 'fleet' }
  | { name: 'runtime'; runtimeId: string }
  | { name: 'sessions' }
  | { name: 'session'; runtimeId: string; sessionId: string }
  | { name: 'audit' }
  | { name: 'policies' }
  | { name: 'policy'; policyName: string }
  | { name: 'risk' }
  | { name: 'settings' }
  | { name: 'login' }
  | { name: 'not_found'; path: string };

function decode(part: string): string | null {
  try {
    return decodeURIComponent(part);
  } catch {
    return null;
  }
}

export function parseRoute(pathname: string): Route {
  const parts = pathname.split('/').filter((p) => p !== '');
  const decoded = parts.map(decode);
  if (decoded.some((p) => p === null)) return { name: 'not_found', path: pathname };
  const [a, b, c, d] = decoded as string[];
  switch (parts.length) {
    case 0:
      return { name: 'fleet' };
    case 1:
      if (a === 'sessions') return { name: 'sessions' };
      if (a === 'audit') return { name: 'audit' };
      if (a === 'policies') return { name: 'policies' };
      if (a === 'risk') return { name: 'risk' };
      if (a === 'settings') return { name: 'settings' };
      if (a === 'login') return { name: 'login' };
      if (a === 'runtimes') return { name: 'fleet' };
      break;
    case 2:
      if (a === 'runtimes' && b) return { name: 'runtime', runtimeId: b };
      if (a === 'policies' && b) return { name: 'policy', policyName: b };
      break;
    case 4:
      if (a === 'runtimes' && b && c === 'sessions' && d) return { name: 'session', runtimeId: b, sessionId: d };
      break;
  }
  return { name: 'not_found', path: pathname };
}

export function pathOf(route: Route): string {
  const e = encodeURIComponent;
  switch (route.name) {
    case 'fleet':
      return '/';
    case 'runtime':
      return `/runtimes/${e(route.runtimeId)}`;
    case 'session':
      return `/runtimes/${e(route.runtimeId)}/sessions/${e(route.sessionId)}`;
    case 'policy':
      return `/policies/${e(route.policyName)}`;
    case 'not_found':
      return route.path;
    default:
      return `/${route.name}`;
  }
}

/** The search part of the URL as filters (the audit trail keeps its filters there). */
export function readFilters(search: string, keys: readonly string[]): Record<string, string> {
  const params = new URLSearchParams(search);
  const out: Record<string, string> = {};
  for (const key of keys) {
    const value = params.get(key);
    if (value) out[key] = value;
  }
  return out;
}
