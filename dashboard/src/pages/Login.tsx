import { useState, type FormEvent } from 'react';
import { api, describeError } from '../api/client';
import type { LoginAnswer, Me } from '../api/types';

export function Login({ message, onSignedIn }: { message: string | null; onSignedIn: (me: Me) => void }) {
  const [org, setOrg] = useState(() => localStorage.getItem('atlasbridge.org') ?? '');
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const answer = await api.post<LoginAnswer>('/v1/auth/login', { org_id: org.trim(), email: email.trim(), password });
      // The session itself is the HttpOnly cookie the answer set; only the CSRF token is kept,
      // in memory.
      api.setCsrf(answer.csrf_token);
      localStorage.setItem('atlasbridge.org', org.trim());
      const me = await api.get<Me>('/v1/me');
      onSignedIn(me);
    } catch (err) {
      setError(describeError(err));
      setBusy(false);
    }
  };

  return (
    <main className="login" id="main">
      <form className="card login-card" onSubmit={submit} aria-labelledby="login-title">
        <h1 id="login-title">Sign in to AtlasBridge</h1>
        {message ? (
          <p className="notice" role="status">
            {message}
          </p>
        ) : null}
        <label htmlFor="login-org">Organisation</label>
        <input id="login-org" name="org" autoComplete="organization" required value={org} onChange={(e) => setOrg(e.target.value)} />
        <label htmlFor="login-email">Email</label>
        <input id="login-email" name="email" type="email" autoComplete="username" required value={email} onChange={(e) => setEmail(e.target.value)} />
        <label htmlFor="login-password">Password</label>
        <input
          id="login-password"
          name="password"
          type="password"
          autoComplete="current-password"
          required
          value={password}
          onChange={(e) => setPassword(e.target.value)}
        />
        <div aria-live="assertive">
          {error ? (
            <p className="error" role="alert" id="login-error">
              {error}
            </p>
          ) : null}
        </div>
        <button type="submit" className="primary" disabled={busy}>
          {busy ? 'Signing in…' : 'Sign in'}
        </button>
        <p className="or">or</p>
        {/* A full navigation: the server redirects to the identity provider and back. */}
        <a className="button" href="/v1/auth/oidc/login">
          Sign in with SSO
        </a>
      </form>
    </main>
  );
}
