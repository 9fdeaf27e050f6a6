import { useState, type FormEvent } from 'react';
import { api, describeError } from '../api/client';
import type { PolicyList, PolicySummary, RuntimePolicyList } from '../api/types';
import { Badge, ErrorBox, Link, Loading, PageHeader, TableWrap } from '../components';
import { navigate, useApp, useLiveEvent, useLoad, useResync } from '../hooks';
import { shortHash, shortId, timeText } from '../lib/format';
import { pathOf } from '../lib/router';
import { starterPolicy } from '../lib/editor';

export function Policies() {
  const { me } = useApp();
  const writer = me.user.role !== 'viewer';
  const [archived, setArchived] = useState(false);
  const policies = useLoad(() => api.get<PolicyList>('/v1/policies', { include_archived: archived, limit: 500 }), [archived]);
  const fleet = useLoad(() => api.get<RuntimePolicyList>('/v1/runtime-policies', { limit: 500 }), []);
  const [error, setError] = useState<string | null>(null);
  useLiveEvent((e) => {
    if (e.kind === 'policy') policies.reload();
    if (e.kind === 'policy' || e.kind === 'runtime_policy') fleet.reload();
  });
  useResync(() => {
    policies.reload();
    fleet.reload();
  });

  const create = async (e: FormEvent<HTMLFormElement>) => {
    e.preventDefault();
    const form = new FormData(e.currentTarget);
    const name = String(form.get('name') ?? '').trim();
    const description = String(form.get('description') ?? '').trim();
    setError(null);
    try {
      await api.post<PolicySummary>('/v1/policies', { name, description, yaml: starterPolicy(name) });
      navigate(pathOf({ name: 'policy', policyName: name }));
    } catch (err) {
      setError(describeError(err));
    }
  };

  return (
    <section aria-labelledby="page-title">
      <PageHeader title="Policies" />
      {writer ? (
        <form className="inline-form" onSubmit={create} aria-label="New policy">
          <label>
            New policy name
            <input name="name" required maxLength={128} id="new-policy-name" />
          </label>
          <label>
            Description
            <input name="description" />
          </label>
          <button type="submit" className="primary">
            Create
          </button>
        </form>
      ) : null}
      <ErrorBox error={error} />
      <label className="check">
        <input type="checkbox" checked={archived} onChange={(e) => setArchived(e.target.checked)} /> Show archived
      </label>
      <ErrorBox error={policies.error} />
      {policies.loading && !policies.data ? <Loading what="policies" /> : null}
      {policies.data && policies.data.policies.length === 0 ? <p className="muted">No policy in the registry yet.</p> : null}
      {policies.data && policies.data.policies.length > 0 ? (
        <TableWrap label="Policies">
          <table className="table" id="policies-table">
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Latest</th>
                <th scope="col">Description</th>
                <th scope="col">Created</th>
              </tr>
            </thead>
            <tbody>
              {policies.data.policies.map((p) => (
                <tr key={p.name}>
                  <td>
                    <Link to={pathOf({ name: 'policy', policyName: p.name })}>{p.name}</Link> {p.archived_at ? <Badge tone="neutral">archived</Badge> : null}
                  </td>
                  <td>{p.latest_version ? <>v{p.latest_version} <code>{shortHash(p.latest_content_hash)}</code></> : '—'}</td>
                  <td>{p.description}</td>
                  <td>{timeText(p.created_at)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </TableWrap>
      ) : null}
      <h2>What each runtime runs</h2>
      <ErrorBox error={fleet.error} />
      {fleet.data && fleet.data.runtimes.length === 0 ? <p className="muted">No runtime yet.</p> : null}
      {fleet.data && fleet.data.runtimes.length > 0 ? (
        <TableWrap label="Runtime policies">
          <table className="table" id="runtime-policies">
            <thead>
              <tr>
                <th scope="col">Runtime</th>
                <th scope="col">Distributed</th>
                <th scope="col">Loaded</th>
                <th scope="col">In sync</th>
                <th scope="col">Pins</th>
              </tr>
            </thead>
            <tbody>
              {fleet.data.runtimes.map((r) => (
                <tr key={r.runtime_id} data-runtime={r.runtime_id} data-in-sync={String(r.in_sync)}>
                  <td>
                    <Link to={pathOf({ name: 'runtime', runtimeId: r.runtime_id })}>
                      <code>{shortId(r.runtime_id)}</code>
                    </Link>
                  </td>
                  <td>{r.distributed ? `${r.distributed.name} v${r.distributed.version}` : '—'}</td>
                  <td>{r.loaded ? <>{r.loaded.name} <code>{shortHash(r.loaded.policy_hash)}</code></> : '—'}</td>
                  <td>{r.in_sync === null ? '—' : r.in_sync ? <Badge tone="ok">in sync</Badge> : <Badge tone="warn">not in sync</Badge>}</td>
                  <td className="num">{r.pins.length}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </TableWrap>
      ) : null}
    </section>
  );
}
