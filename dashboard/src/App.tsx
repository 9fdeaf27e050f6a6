import { useEffect, useMemo, useState, type ReactNode } from 'react';
import { api, ApiError, describeError } from './api/client';
import type { Me } from './api/types';
import { Ctx, navigate, useApp, useLiveState, useLocation } from './hooks';
import { LiveStream, liveUrl, type SocketLike } from './lib/live';
import type { Route } from './lib/router';
import { Link } from './components';
import { Login } from './pages/Login';
import { Fleet } from './pages/Fleet';
import { RuntimePage } from './pages/Runtime';
import { Sessions, SessionTimeline } from './pages/Sessions';
import { Audit } from './pages/Audit';
import { Policies } from './pages/Policies';
import { PolicyEditor } from './pages/PolicyEditor';
import { Risk } from './pages/Risk';
import { Settings } from './pages/Settings';

type Auth = { state: 'checking' } | { state: 'out'; message: string | null } | { state: 'in'; me: Me };

export function App() {
  const [auth, setAuth] = useState<Auth>({ state: 'checking' });

  useEffect(() => {
    api.whenUnauthenticated(() => setAuth({ state: 'out', message: 'Your session has ended. Sign in again.' }));
    api.get<Me>('/v1/me').then(
      (me) => {
        api.setCsrf(me.csrf_token);
        setAuth({ state: 'in', me });
      },
      (e: unknown) => {
        const expected = e instanceof ApiError && e.status === 401;
        setAuth({ state: 'out', message: expected ? null : describeError(e) });
      },
    );
  }, []);

  if (auth.state === 'checking') {
    return (
      <main className="center" aria-busy="true">
        <p role="status">Loading…</p>
      </main>
    );
  }
  if (auth.state === 'out') {
    return (
      <Login
        message={auth.message}
        onSignedIn={(me) => {
          api.setCsrf(me.csrf_token);
          setAuth({ state: 'in', me });
          if (location.pathname === '/login') navigate('/', true);
        }}
      />
    );
  }
  return <SignedIn me={auth.me} onSignedOut={() => setAuth({ state: 'out', message: 'Signed out.' })} />;
}

const NAV: { to: string; label: string; names: Route['name'][] }[] = [
  { to: '/', label: 'Fleet', names: ['fleet', 'runtime'] },
  { to: '/sessions', label: 'Sessions', names: ['sessions', 'session'] },
  { to: '/audit', label: 'Audit trail', names: ['audit'] },
  { to: '/policies', label: 'Policies', names: ['policies', 'policy'] },
  { to: '/risk', label: 'Risk', names: ['risk'] },
  { to: '/settings', label: 'Settings', names: ['settings'] },
];

function SignedIn({ me, onSignedOut }: { me: Me; onSignedOut: () => void }) {
  const live = useMemo(
    () =>
      new LiveStream({
        url: liveUrl(location),
        // The DOM's WebSocket has these members; its handler types are narrower than SocketLike's.
        open: (url) => new WebSocket(url) as unknown as SocketLike,
        setTimer: (fn, ms) => setTimeout(fn, ms),
        clearTimer: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
      }),
    [],
  );
  useEffect(() => {
    live.start();
    return () => live.stop();
  }, [live]);

  const logout = () => {
    api.post('/v1/auth/logout', {}).finally(() => {
      live.stop();
      onSignedOut();
    });
  };

  return (
    <Ctx.Provider value={{ me, live, logout }}>
      <Shell />
    </Ctx.Provider>
  );
}

function LiveIndicator() {
  const state = useLiveState();
  const text = state === 'open' ? 'Live' : state === 'connecting' ? 'Connecting…' : 'Reconnecting…';
  return (
    <span className={`live live-${state}`} role="status" aria-live="polite" data-live={state}>
      <span className="live-dot" aria-hidden="true" />
      {text}
    </span>
  );
}

function Shell() {
  const { route } = useLocation();
  const [menuOpen, setMenuOpen] = useState(false);

  useEffect(() => {
    setMenuOpen(false);
    // Move focus to the new page's heading, so keyboard and screen-reader users land on it.
    const heading = document.getElementById('page-title');
    if (heading && document.activeElement !== document.body) heading.focus();
    document.title = `${titleOf(route)} · AtlasBridge`;
  }, [route]);

  return (
    <div className="app">
      <a className="skip" href="#main">
        Skip to content
      </a>
      <header className="topbar">
        <span className="brand">AtlasBridge</span>
        <button
          type="button"
          className="menu-button"
          aria-expanded={menuOpen}
          aria-controls="nav"
          onClick={() => setMenuOpen((open) => !open)}
        >
          Menu
        </button>
        <nav id="nav" aria-label="Main" className={menuOpen ? 'nav open' : 'nav'}>
          <ul>
            {NAV.map((item) => (
              <li key={item.to}>
                <Link to={item.to} aria-current={item.names.includes(route.name) ? 'page' : undefined}>
                  {item.label}
                </Link>
              </li>
            ))}
          </ul>
        </nav>
        <LiveIndicator />
        <UserMenu />
      </header>
      <main id="main" tabIndex={-1}>
        <Page route={route} />
      </main>
    </div>
  );
}

function UserMenu() {
  const { me, logout } = useApp();
  return (
    <div className="user">
      <span className="user-name" title={`${me.user.email} (${me.user.role}) in ${me.org_id}`}>
        {me.user.display_name || me.user.email} · {me.user.role}
      </span>
      <button type="button" className="link-button" onClick={logout}>
        Sign out
      </button>
    </div>
  );
}


function titleOf(route: Route): string {
  switch (route.name) {
    case 'fleet':
      return 'Fleet';
    case 'runtime':
      return 'Runtime';
    case 'sessions':
    case 'session':
      return 'Sessions';
    case 'audit':
      return 'Audit trail';
    case 'policies':
    case 'policy':
      return 'Policies';
    case 'risk':
      return 'Risk';
    case 'settings':
      return 'Settings';
    default:
      return 'Not found';
  }
}

function Page({ route }: { route: Route }): ReactNode {
  switch (route.name) {
    case 'fleet':
    case 'login':
      return <Fleet />;
    case 'runtime':
      return <RuntimePage key={route.runtimeId} runtimeId={route.runtimeId} />;
    case 'sessions':
      return <Sessions />;
    case 'session':
      return <SessionTimeline key={route.runtimeId + route.sessionId} runtimeId={route.runtimeId} sessionId={route.sessionId} />;
    case 'audit':
      return <Audit />;
    case 'policies':
      return <Policies />;
    case 'policy':
      return <PolicyEditor key={route.policyName} name={route.policyName} />;
    case 'risk':
      return <Risk />;
    case 'settings':
      return <Settings />;
    case 'not_found':
      return (
        <section>
          <h1 id="page-title" tabIndex={-1}>
            Not found
          </h1>
          <p>
            Nothing is at <code>{route.path}</code>. <Link to="/">Back to the fleet</Link>.
          </p>
        </section>
      );
  }
}
