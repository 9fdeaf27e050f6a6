import { describe, expect, it } from 'vitest';
import { parseRoute, pathOf, readFilters, type Route } from './router';

describe('routes', () => {
  it('parses every screen and writes it back', () => {
    const routes: Route[] = [
      { name: 'fleet' },
      { name: 'runtime', runtimeId: 'ed25519:AbC-_x' },
      { name: 'sessions' },
      { name: 'session', runtimeId: 'ed25519:AbC', sessionId: 'a/b c' },
      { name: 'audit' },
      { name: 'policies' },
      { name: 'policy', policyName: 'my policy/v2' },
      { name: 'risk' },
      { name: 'settings' },
    ];
    for (const route of routes) expect(parseRoute(pathOf(route))).toEqual(route);
  });

  it('encodes what a path segment cannot hold', () => {
    expect(pathOf({ name: 'policy', policyName: 'a/b' })).toBe('/policies/a%2Fb');
    expect(pathOf({ name: 'runtime', runtimeId: 'ed25519:x' })).toBe('/runtimes/ed25519%3Ax');
  });

  it('says what it does not know, and survives bad escapes', () => {
    expect(parseRoute('/nowhere')).toEqual({ name: 'not_found', path: '/nowhere' });
    expect(parseRoute('/runtimes/a/b')).toEqual({ name: 'not_found', path: '/runtimes/a/b' });
    expect(parseRoute('/policies/%E0%A4%A')).toEqual({ name: 'not_found', path: '/policies/%E0%A4%A' });
    expect(parseRoute('/audit/')).toEqual({ name: 'audit' });
  });

  it('reads only the named, non-empty filters', () => {
    expect(readFilters('?runtime_id=r1&risk=high,critical&x=1&agent_id=', ['runtime_id', 'risk', 'agent_id'])).toEqual({
      runtime_id: 'r1',
      risk: 'high,critical',
    });
  });
});
