import { useState, type FormEvent } from 'react';
import { api, describeError, seg } from '../api/client';
import type { ApiKey, CreatedApiKey, Role, User } from '../api/types';
import { Badge, ErrorBox, Loading, PageHeader, TableWrap } from '../components';
import { useApp, useLoad } from '../hooks';
import { timeText } from '../lib/format';

const ROLES: Role[] = ['viewer', 'operator', 'admin', 'owner'];

export function Settings() {
  const { me } = useApp();
  const admin = me.user.role === 'admin' || me.user.role === 'owner';
  return (
    <section aria-labelledby="page-title">
      <PageHeader title="Settings" />
      <p>
        Signed in as <strong>{me.user.email}</strong> ({me.user.role}) in <strong>{me.org_id}</strong>; the session ends by {timeText(me.expires_at)}.
      </p>
      <RolesHelp />
      {admin ? (
        <>
          <Keys />
          <Users />
        </>
      ) : (
        <p className="muted">API keys and users are managed by admins and owners.</p>
      )}
    </section>
  );
}

function RolesHelp() {
  return (
    <details className="card">
      <summary>What each role may do</summary>
      <dl className="kv">
        <dt>viewer</dt>
        <dd>Reads everything of the organisation; validates, diffs and tests policies.</dd>
        <dt>operator</dt>
        <dd>Also creates, uploads, archives and distributes policies.</dd>
        <dt>admin</dt>
        <dd>Also manages API keys and users (but not owners).</dd>
        <dt>owner</dt>
        <dd>Also manages owners.</dd>
      </dl>
    </details>
  );
}

function Keys() {
  const keys = useLoad(() => api.get<{ api_keys: ApiKey[] }>('/v1/api-keys'), []);
  const [created, setCreated] = useState<CreatedApiKey | null>(null);
  const [error, setError] = useState<string | null>(null);

  const create = async (e: FormEvent<HTMLFormElement>) => {
    e.preventDefault();
    const form = e.currentTarget;
    const label = String(new FormData(form).get('label') ?? '').trim();
    setError(null);
    try {
      setCreated(await api.post<CreatedApiKey>('/v1/api-keys', { label }));
      form.reset();
      keys.reload();
    } catch (err) {
      setError(describeError(err));
    }
  };

  const revoke = async (key: ApiKey) => {
    if (!window.confirm(`Revoke ${key.key_id}? Runtimes using it are cut off at their next connection.`)) return;
    setError(null);
    try {
      await api.del(`/v1/api-keys/${seg(key.key_id)}`);
      keys.reload();
    } catch (err) {
      setError(describeError(err));
    }
  };

  return (
    <div>
      <h2>API keys</h2>
      <p className="muted">Runtimes connect with an API key. The secret is shown once, when the key is made.</p>
      <form className="inline-form" onSubmit={create} aria-label="New API key">
        <label>
          Label
          <input name="label" maxLength={200} />
        </label>
        <button type="submit">Create key</button>
      </form>
      {created ? (
        <div className="notice" role="status">
          New key <code>{created.key_id}</code>: copy it now, it is not shown again.
          <input className="secret" readOnly value={created.api_key} aria-label="The new API key" onFocus={(e) => e.currentTarget.select()} />
        </div>
      ) : null}
      <ErrorBox error={error ?? keys.error} />
      {keys.loading && !keys.data ? <Loading what="keys" /> : null}
      {keys.data ? (
        <TableWrap label="API keys">
          <table className="table" id="keys-table">
            <thead>
              <tr>
                <th scope="col">Key</th>
                <th scope="col">Label</th>
                <th scope="col">Created</th>
                <th scope="col">State</th>
              </tr>
            </thead>
            <tbody>
              {keys.data.api_keys.map((k) => (
                <tr key={k.key_id}>
                  <td>
                    <code>{k.key_id}</code>
                  </td>
                  <td>{k.label}</td>
                  <td>{timeText(k.created_at)}</td>
                  <td>
                    {k.revoked_at ? (
                      <Badge tone="neutral">revoked {timeText(k.revoked_at)}</Badge>
                    ) : (
                      <button type="button" className="danger" onClick={() => revoke(k)}>
                        Revoke
                      </button>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </TableWrap>
      ) : null}
    </div>
  );
}

function Users() {
  const { me } = useApp();
  const users = useLoad(() => api.get<{ users: User[] }>('/v1/users'), []);
  const [error, setError] = useState<string | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const roles = me.user.role === 'owner' ? ROLES : ROLES.filter((r) => r !== 'owner');

  const create = async (e: FormEvent<HTMLFormElement>) => {
    e.preventDefault();
    const form = e.currentTarget;
    const data = new FormData(form);
    const password = String(data.get('password') ?? '');
    setError(null);
    try {
      const user = await api.post<User>('/v1/users', {
        email: String(data.get('email') ?? '').trim(),
        display_name: String(data.get('display_name') ?? '').trim(),
        role: String(data.get('role') ?? 'viewer'),
        password: password ? password : null,
      });
      setNotice(`${user.email} added as ${user.role}.`);
      form.reset();
      users.reload();
    } catch (err) {
      setError(describeError(err));
    }
  };

  const update = async (user: User, change: { role?: Role; disabled?: boolean }) => {
    setError(null);
    try {
      await api.patch<User>(`/v1/users/${seg(user.user_id)}`, change);
      setNotice(`${user.email} updated.`);
      users.reload();
    } catch (err) {
      setError(describeError(err));
    }
  };

  return (
    <div>
      <h2>Users and roles</h2>
      <form className="inline-form" onSubmit={create} aria-label="New user">
        <label>
          Email
          <input name="email" type="email" required />
        </label>
        <label>
          Display name
          <input name="display_name" />
        </label>
        <label>
          Role
          <select name="role" defaultValue="viewer">
            {roles.map((r) => (
              <option key={r}>{r}</option>
            ))}
          </select>
        </label>
        <label>
          Password <span className="muted">(12+ characters; empty: SSO only)</span>
          <input name="password" type="password" autoComplete="new-password" minLength={12} />
        </label>
        <button type="submit">Add user</button>
      </form>
      <div aria-live="polite">{notice ? <p className="notice">{notice}</p> : null}</div>
      <ErrorBox error={error ?? users.error} />
      {users.data ? (
        <TableWrap label="Users">
          <table className="table" id="users-table">
            <thead>
              <tr>
                <th scope="col">User</th>
                <th scope="col">Role</th>
                <th scope="col">Sign-in</th>
                <th scope="col">State</th>
              </tr>
            </thead>
            <tbody>
              {users.data.users.map((u) => (
                <tr key={u.user_id}>
                  <td>
                    {u.display_name || u.email} <span className="muted">{u.display_name ? u.email : ''}</span>
                  </td>
                  <td>
                    <label className="sr-only" htmlFor={`role-${u.user_id}`}>
                      Role of {u.email}
                    </label>
                    <select id={`role-${u.user_id}`} value={u.role} onChange={(e) => update(u, { role: e.target.value as Role })} disabled={u.role === 'owner' && me.user.role !== 'owner'}>
                      {(u.role === 'owner' ? ROLES : roles).map((r) => (
                        <option key={r}>{r}</option>
                      ))}
                    </select>
                  </td>
                  <td>{[u.has_password ? 'password' : '', u.sso_linked ? 'SSO' : ''].filter(Boolean).join(', ') || 'SSO (not linked yet)'}</td>
                  <td>
                    {u.disabled ? <Badge tone="neutral">disabled</Badge> : <Badge tone="ok">enabled</Badge>}{' '}
                    {u.user_id !== me.user.user_id ? (
                      <button type="button" className={u.disabled ? '' : 'danger'} onClick={() => update(u, { disabled: !u.disabled })} aria-label={`${u.disabled ? 'Enable' : 'Disable'} ${u.email}`}>
                        {u.disabled ? 'Enable' : 'Disable'}
                      </button>
                    ) : null}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </TableWrap>
      ) : null}
    </div>
  );
}
