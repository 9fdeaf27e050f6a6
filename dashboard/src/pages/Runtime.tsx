import { api, seg } from '../api/client';
import type { RuntimeDetail, RuntimePolicy } from '../api/types';
import { Badge, ChainSummary, ErrorBox, Link, Loading, PageHeader, TableWrap, statusTone } from '../components';
import { useLiveEvent, useLoad, useNow, useResync } from '../hooks';
import { ago, shortHash, timeText } from '../lib/format';

export function RuntimePage({ runtimeId }: { runtimeId: string }) {
  const now = useNow();
  const detail = useLoad(() => api.get<RuntimeDetail>(`/v1/runtimes/${seg(runtimeId)}`), [runtimeId]);
  const policy = useLoad(() => api.get<RuntimePolicy>(`/v1/runtimes/${seg(runtimeId)}/policy`), [runtimeId]);

  useLiveEvent((event) => {
    const p = event.payload as { runtime_id?: unknown } | null;
    if (!p || p.runtime_id !== runtimeId) {
      if (event.kind === 'policy') policy.reload();
      return;
    }
    if (event.kind === 'runtime_status' || event.kind === 'chain_status') detail.reload();
    if (event.kind === 'runtime_policy') policy.reload();
  });
  useResync(() => {
    detail.reload();
    policy.reload();
  });

  const r = detail.data;
  const p = policy.data;
  const auditLink = `/audit?runtime_id=${encodeURIComponent(runtimeId)}`;
  return (
    <section aria-labelledby="page-title">
      <PageHeader title="Runtime">
        <Link to={auditLink} className="button">
          Its decisions
        </Link>
        <Link to={`/sessions?runtime_id=${encodeURIComponent(runtimeId)}`} className="button">
          Its sessions
        </Link>
      </PageHeader>
      <p className="break-all">
        <code>{runtimeId}</code>
      </p>
      <ErrorBox error={detail.error} />
      {detail.loading && !r ? <Loading what="the runtime" /> : null}
      {r ? (
        <div className="cards">
          <div className="card">
            <h2>Status</h2>
            <dl className="kv">
              <dt>Status</dt>
              <dd>
                <Badge tone={statusTone(r.status)}>{r.status}</Badge>
              </dd>
              <dt>Witness</dt>
              <dd>
                <Badge tone={statusTone(r.witness_status)}>{r.witness_status}</Badge> {r.witness_detail}
              </dd>
              <dt>Version</dt>
              <dd>
                {r.agent_version} ({r.edition})
              </dd>
              <dt>First seen</dt>
              <dd>{timeText(r.first_seen)}</dd>
              <dt>Last seen</dt>
              <dd title={timeText(r.last_seen)}>{ago(r.last_seen, now)}</dd>
              <dt>Last heartbeat</dt>
              <dd>{timeText(r.last_heartbeat)}</dd>
            </dl>
          </div>
          <div className="card">
            <h2>Chains</h2>
            <p className="muted">Re-verified by the server: every entry's hash recomputed and every link checked.</p>
            <dl className="kv" id="runtime-chains">
              {r.chains.map((c) => (
                <div key={c.stream} className="kv-row" data-stream={c.stream} data-status={c.status}>
                  <dt>{c.stream}</dt>
                  <dd>
                    <ChainSummary chain={c} /> <span className="muted">{c.next_seq} entries linked{c.max_seq !== null ? `, highest seq ${c.max_seq}` : ''}</span>
                    {c.broken_detail ? <div className="error-text">{c.broken_detail}</div> : null}
                  </dd>
                </div>
              ))}
              {r.chains.length === 0 ? <p className="muted">No entries received yet.</p> : null}
            </dl>
          </div>
          <div className="card">
            <h2>Policy</h2>
            <ErrorBox error={policy.error} />
            {p ? (
              <dl className="kv" id="runtime-policy">
                <dt>Distributed</dt>
                <dd>
                  {p.distributed ? (
                    <>
                      <Link to={`/policies/${encodeURIComponent(p.distributed.name)}`}>{p.distributed.name}</Link> v{p.distributed.version}{' '}
                      <code>{shortHash(p.distributed.content_hash)}</code>
                    </>
                  ) : (
                    'none'
                  )}
                </dd>
                <dt>Loaded</dt>
                <dd>
                  {p.loaded ? (
                    <>
                      {p.loaded.name} <code>{shortHash(p.loaded.policy_hash)}</code> <span className="muted">({p.loaded.source})</span>
                    </>
                  ) : (
                    'not reported'
                  )}
                </dd>
                <dt>In sync</dt>
                <dd data-in-sync={String(p.in_sync)}>
                  {p.in_sync === null ? <Badge tone="neutral">unknown</Badge> : p.in_sync ? <Badge tone="ok">in sync</Badge> : <Badge tone="warn">not in sync</Badge>}
                </dd>
              </dl>
            ) : null}
            <h3>Local pins</h3>
            {p && p.pins.length === 0 ? <p className="muted">No local pins (a pin beats the cloud's policy on the runtime).</p> : null}
            {p && p.pins.length > 0 ? (
              <TableWrap label="Local pins">
                <table className="table">
                  <thead>
                    <tr>
                      <th scope="col">Scope</th>
                      <th scope="col">Id</th>
                      <th scope="col">Policy</th>
                    </tr>
                  </thead>
                  <tbody>
                    {p.pins.map((pin) => (
                      <tr key={pin.scope + pin.id}>
                        <td>{pin.scope}</td>
                        <td>{pin.id}</td>
                        <td>
                          <code>{shortHash(pin.policy_hash)}</code> {pin.registry.map((v) => `${v.name} v${v.version}`).join(', ')}
                        </td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              </TableWrap>
            ) : null}
          </div>
          <div className="card">
            <h2>Checkpoints</h2>
            <p className="muted">Signed by the runtime's key; each verified against the one before it.</p>
            {r.checkpoints.length === 0 ? <p className="muted">None received yet.</p> : null}
            {r.checkpoints.length > 0 ? (
              <TableWrap label="Checkpoints">
                <table className="table" id="runtime-checkpoints">
                  <thead>
                    <tr>
                      <th scope="col">#</th>
                      <th scope="col">Covers seq</th>
                      <th scope="col">Verdict</th>
                      <th scope="col">Received</th>
                    </tr>
                  </thead>
                  <tbody>
                    {r.checkpoints.map((c) => (
                      <tr key={c.checkpoint_seq} data-verdict={c.verdict}>
                        <td>
                          {c.checkpoint_seq} <code title={c.checkpoint_hash}>{shortHash(c.checkpoint_hash)}</code>
                        </td>
                        <td className="num">{c.seq ?? '—'}</td>
                        <td>
                          <Badge tone={c.verdict === 'verified' ? 'ok' : c.verdict === 'bad' ? 'bad' : 'warn'}>{c.verdict}</Badge>
                        </td>
                        <td>{timeText(c.received_at)}</td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              </TableWrap>
            ) : null}
          </div>
          <div className="card">
            <h2>Findings</h2>
            {r.flags.length === 0 ? <p className="muted">None.</p> : null}
            <ul className="plain">
              {r.flags.map((f, i) => (
                <li key={i}>
                  <Badge tone="bad">{f.kind}</Badge> {f.detail} <span className="muted">{timeText(f.flagged_at)}</span>
                </li>
              ))}
            </ul>
          </div>
        </div>
      ) : null}
    </section>
  );
}
