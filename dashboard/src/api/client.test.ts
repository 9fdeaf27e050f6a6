import { describe, expect, it } from 'vitest';
import { Api, ApiError, describeError, envelopeOf, withQuery } from './client';

type Call = { url: string; init: RequestInit };

function fakeFetch(answers: { status: number; body?: unknown; headers?: Record<string, string> }[]) {
  const calls: Call[] = [];
  const fetcher = async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    calls.push({ url: String(input), init: init ?? {} });
    const next = answers.shift();
    if (!next) throw new Error('no more answers');
    return new Response(next.body === undefined ? null : JSON.stringify(next.body), { status: next.status, headers: next.headers });
  };
  return { calls, fetcher: fetcher as typeof fetch };
}

describe('the API client', () => {
  it('sends the CSRF token on writes only, and JSON bodies', async () => {
    const { calls, fetcher } = fakeFetch([{ status: 200, body: { ok: 1 } }, { status: 201, body: { id: 2 } }, { status: 204 }]);
    const api = new Api(fetcher);
    api.setCsrf('tok');
    expect(await api.get('/v1/runtimes', { limit: 5, cursor: undefined, from: '' })).toEqual({ ok: 1 });
    expect(await api.post('/v1/policies', { name: 'p' })).toEqual({ id: 2 });
    expect(await api.del('/v1/api-keys/k')).toBeUndefined();
    expect(calls[0]!.url).toBe('/v1/runtimes?limit=5');
    const headers = (i: number) => calls[i]!.init.headers as Record<string, string>;
    expect(headers(0)['x-csrf-token']).toBeUndefined();
    expect(headers(1)['x-csrf-token']).toBe('tok');
    expect(headers(1)['content-type']).toBe('application/json');
    expect(calls[1]!.init.body).toBe('{"name":"p"}');
    expect(headers(2)['x-csrf-token']).toBe('tok');
    expect(calls.every((c) => c.init.credentials === 'same-origin')).toBe(true);
  });

  it('turns the error envelope into an ApiError, and a 401 into a signed-out app', async () => {
    const envelope = { error: 'no live session: log in', code: 'UNAUTHENTICATED', request_id: 'req-1', details: {} };
    const { fetcher } = fakeFetch([{ status: 401, body: envelope }]);
    const api = new Api(fetcher);
    let signedOut = 0;
    api.whenUnauthenticated(() => signedOut++);
    const error = await api.get('/v1/me').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ApiError);
    expect(error).toMatchObject({ status: 401, code: 'UNAUTHENTICATED', requestId: 'req-1' });
    expect(signedOut).toBe(1);
  });

  it('does not sign out on a failed login', async () => {
    const { fetcher } = fakeFetch([{ status: 401, body: { error: 'x', code: 'INVALID_CREDENTIALS', request_id: 'r', details: {} } }]);
    const api = new Api(fetcher);
    let signedOut = 0;
    api.whenUnauthenticated(() => signedOut++);
    await api.post('/v1/auth/login', {}).catch(() => {});
    expect(signedOut).toBe(0);
  });

  it('reads a body that is not the envelope as one', () => {
    expect(envelopeOf(502, '<html>', 'r9')).toEqual({ error: 'the server answered 502', code: 'UNAVAILABLE', request_id: 'r9', details: {} });
    expect(envelopeOf(418, null, null).code).toBe('HTTP_418');
    expect(envelopeOf(400, { error: 'bad', code: 'BAD_REQUEST', details: 'x' }, 'r').details).toEqual({});
  });

  it('tells people specifically what went wrong', () => {
    const e = (code: string, details: Record<string, unknown> = {}) => new ApiError(400, { error: 'raw message', code, request_id: 'r7', details });
    expect(describeError(e('INVALID_CREDENTIALS'))).toMatch(/Organisation, email or password is wrong/);
    expect(describeError(e('FORBIDDEN', { required_role: 'operator', role: 'viewer' }))).toBe('This needs the operator role; you are viewer.');
    expect(describeError(e('LAST_OWNER'))).toMatch(/last enabled owner/);
    expect(describeError(e('BAD_REQUEST', { field: 'from' }))).toBe('raw message (field from) (request r7)');
    expect(describeError(e('SOMETHING_NEW'))).toBe('raw message (request r7)');
    expect(describeError(new TypeError('Failed to fetch'))).toMatch(/cannot be reached/);
  });

  it('leaves out empty query values', () => {
    expect(withQuery('/p', { a: 'x y', b: null, c: '', d: false })).toBe('/p?a=x+y&d=false');
    expect(withQuery('/p')).toBe('/p');
  });
});
