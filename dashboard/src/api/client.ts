// The one way the dashboard talks to the server: same-origin fetch with the session cookie
// (HttpOnly, set by the login answer; the dashboard never keeps the session token), the
// session's CSRF token in `x-csrf-token` on every write, and the error envelope
// `{error, code, request_id, details}` turned into an ApiError with a message for people.

export interface ErrorEnvelope {
  error: string;
  code: string;
  request_id: string;
  details: Record<string, unknown>;
}

export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly requestId: string;
  readonly details: Record<string, unknown>;

  constructor(status: number, envelope: ErrorEnvelope) {
    super(envelope.error);
    this.name = 'ApiError';
    this.status = status;
    this.code = envelope.code;
    this.requestId = envelope.request_id;
    this.details = envelope.details;
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Reads an error answer; a body that is not the envelope (a proxy's page) still becomes one. */
export function envelopeOf(status: number, body: unknown, requestId: string | null): ErrorEnvelope {
  if (isRecord(body) && typeof body.error === 'string' && typeof body.code === 'string') {
    return {
      error: body.error,
      code: body.code,
      request_id: typeof body.request_id === 'string' ? body.request_id : (requestId ?? ''),
      details: isRecord(body.details) ? body.details : {},
    };
  }
  return {
    error: `the server answered ${status}`,
    code: status >= 500 ? 'UNAVAILABLE' : 'HTTP_' + status,
    request_id: requestId ?? '',
    details: {},
  };
}

/** What a person is told about a failed call: specific where the code says something. */
export function describeError(error: unknown): string {
  if (!(error instanceof ApiError)) {
    if (error instanceof TypeError) return 'The server cannot be reached. Check the connection and try again.';
    return error instanceof Error ? error.message : String(error);
  }
  const ref = error.requestId ? ` (request ${error.requestId})` : '';
  switch (error.code) {
    case 'INVALID_CREDENTIALS':
      return 'Organisation, email or password is wrong, or the account is disabled.';
    case 'RATE_LIMITED':
      return 'Too many attempts. Wait a few minutes before trying again.';
    case 'UNAUTHENTICATED':
    case 'SESSION_EXPIRED':
      return 'Your session has ended. Sign in again.';
    case 'CSRF_TOKEN_REQUIRED':
      return 'The page lost its security token. Reload it and try again.';
    case 'FORBIDDEN':
    case 'ROLE_REQUIRED': {
      const required = error.details.required_role;
      return typeof required === 'string'
        ? `This needs the ${required} role; you are ${String(error.details.role ?? 'below it')}.`
        : `You are not allowed to do this${ref}.`;
    }
    case 'OWNER_REQUIRED':
      return 'Only an owner can create, change or disable owners.';
    case 'LAST_OWNER':
      return 'The last enabled owner cannot be demoted or disabled.';
    case 'INVALID_POLICY':
      return 'The policy is not valid: see the marked lines.';
    case 'POLICY_ARCHIVED':
      return 'This policy is archived: it takes no new versions or distributions.';
    case 'UNAVAILABLE':
      return `The server is busy or its database is unreachable. Try again shortly${ref}.`;
    case 'NOT_FOUND':
      return `Not found: it does not exist or is not in your organisation${ref}.`;
    default: {
      const field = error.details.field;
      return typeof field === 'string' ? `${error.message} (field ${field})${ref}` : `${error.message}${ref}`;
    }
  }
}

export type Query = Record<string, string | number | boolean | null | undefined>;

/** `path?query`, leaving out empty values. */
export function withQuery(path: string, query?: Query): string {
  if (!query) return path;
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value === undefined || value === null || value === '') continue;
    params.set(key, String(value));
  }
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}

/** A path segment (runtime ids contain `:`, policy names may contain anything). */
export const seg = (value: string): string => encodeURIComponent(value);

type Listener = () => void;

export class Api {
  private csrf = '';
  private onUnauthenticated: Listener | null = null;
  private readonly fetcher: typeof fetch;

  constructor(fetcher: typeof fetch = (...args) => fetch(...args)) {
    this.fetcher = fetcher;
  }

  setCsrf(token: string): void {
    this.csrf = token;
  }

  /** Called when an answer says the session is gone (401): the app shows the login. */
  whenUnauthenticated(listener: Listener): void {
    this.onUnauthenticated = listener;
  }

  async call<T>(method: string, path: string, body?: unknown, query?: Query): Promise<T> {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (method !== 'GET' && method !== 'HEAD' && this.csrf) headers['x-csrf-token'] = this.csrf;
    const answer = await this.fetcher(withQuery(path, query), {
      method,
      headers,
      credentials: 'same-origin',
      body: body === undefined ? null : JSON.stringify(body),
    });
    if (answer.status === 204) return undefined as T;
    const text = await answer.text();
    let parsed: unknown = null;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      parsed = null;
    }
    if (!answer.ok) {
      const error = new ApiError(answer.status, envelopeOf(answer.status, parsed, answer.headers.get('x-request-id')));
      if (answer.status === 401 && !path.startsWith('/v1/auth/login')) this.onUnauthenticated?.();
      throw error;
    }
    return parsed as T;
  }

  get<T>(path: string, query?: Query): Promise<T> {
    return this.call<T>('GET', path, undefined, query);
  }

  post<T>(path: string, body: unknown): Promise<T> {
    return this.call<T>('POST', path, body);
  }

  patch<T>(path: string, body: unknown): Promise<T> {
    return this.call<T>('PATCH', path, body);
  }

  del<T>(path: string): Promise<T> {
    return this.call<T>('DELETE', path);
  }
}

export const api = new Api();
