import { useEffect, useRef, useState, type FormEvent } from 'react';
import { api, ApiError, describeError, seg } from '../api/client';
import type {
  Distribution,
  DistributionList,
  PolicyProblem,
  RuntimeList,
  SignedVersion,
  TrialAnswer,
  UploadedVersion,
  Validation,
  VersionDiff,
  VersionList,
} from '../api/types';
import { Badge, ErrorBox, Loading, PageHeader, TableWrap } from '../components';
import { useApp, useLiveEvent, useLoad } from '../hooks';
import { offsetOf, starterPolicy } from '../lib/editor';
import { shortHash, shortId, timeText } from '../lib/format';
import { YamlEditor } from '../YamlEditor';

const VALIDATE_DELAY_MS = 350;

function canWrite(role: string): boolean {
  return role === 'operator' || role === 'admin' || role === 'owner';
}

function problemsOf(error: unknown): PolicyProblem[] | null {
  if (!(error instanceof ApiError) || error.code !== 'INVALID_POLICY') return null;
  const errors = error.details.errors;
  return Array.isArray(errors) ? (errors as PolicyProblem[]) : null;
}

export function PolicyEditor({ name }: { name: string }) {
  const { me } = useApp();
  const writer = canWrite(me.user.role);
  const base = `/v1/policies/${seg(name)}`;
  const versions = useLoad(() => api.get<VersionList>(`${base}/versions`, { limit: 100 }), [name]);
  const detail = useLoad(() => api.get<{ archived_at: string | null; description: string }>(base), [name]);
  const archived = Boolean(detail.data?.archived_at);
  const distributions = useLoad(() => api.get<DistributionList>(`${base}/distributions`, { limit: 20 }), [name]);
  const [yaml, setYaml] = useState<string | null>(null);
  const [loadedFrom, setLoadedFrom] = useState<string | null>(null);
  const [validation, setValidation] = useState<Validation | null>(null);
  const [validating, setValidating] = useState(false);
  const [validationError, setValidationError] = useState<string | null>(null);
  const [status, setStatus] = useState<{ tone: 'ok' | 'bad'; text: string } | null>(null);
  const [busy, setBusy] = useState(false);
  const [target, setTarget] = useState<'all' | 'chosen'>('all');
  const [chosen, setChosen] = useState<string[]>([]);
  const textarea = useRef<HTMLTextAreaElement>(null);
  const latest = versions.data?.versions[0];

  // The editor starts from the newest version, or from a starter for an empty policy.
  useEffect(() => {
    if (yaml !== null || versions.loading) return;
    if (versions.error && !versions.data) return;
    if (!latest) {
      setYaml(starterPolicy(name));
      setLoadedFrom(null);
      return;
    }
    api.get<SignedVersion>(`${base}/versions/${seg(latest.version)}`).then(
      (v) => {
        setYaml(v.yaml);
        setLoadedFrom(v.version);
      },
      (e: unknown) => setStatus({ tone: 'bad', text: describeError(e) }),
    );
  }, [versions.loading, versions.data, versions.error, latest, yaml, base, name]);

  // Live validation through the server (the runtimes' own loader), debounced.
  useEffect(() => {
    if (yaml === null) return;
    let current = true;
    setValidating(true);
    const timer = setTimeout(() => {
      api.post<Validation>('/v1/policy-validation', { yaml, name }).then(
        (v) => {
          if (!current) return;
          setValidation(v);
          setValidationError(null);
          setValidating(false);
        },
        (e: unknown) => {
          if (!current) return;
          setValidationError(describeError(e));
          setValidating(false);
        },
      );
    }, VALIDATE_DELAY_MS);
    return () => {
      current = false;
      clearTimeout(timer);
    };
  }, [yaml, name]);

  useLiveEvent((e) => {
    if (e.kind === 'policy' && e.payload.name === name) {
      versions.reload();
      distributions.reload();
      detail.reload();
    }
  });

  const runtimes = useLoad(() => api.get<RuntimeList>('/v1/runtimes', { limit: 500 }), []);
  const problems = validation?.errors ?? [];
  const valid = validation?.valid === true && !validating;
  const unchanged = latest !== undefined && validation?.content_hash === latest.content_hash;

  const goTo = (p: PolicyProblem) => {
    const el = textarea.current;
    if (!el || yaml === null) return;
    el.focus();
    const at = offsetOf(yaml, p.line, p.column);
    el.setSelectionRange(at, at);
  };

  /** Uploads the editor's text unless it is the newest version already; the version. */
  const save = async (): Promise<UploadedVersion | null> => {
    if (yaml === null) return null;
    try {
      const uploaded = await api.post<UploadedVersion>(`${base}/versions`, { yaml });
      setLoadedFrom(uploaded.version);
      versions.reload();
      return uploaded;
    } catch (e) {
      const found = problemsOf(e);
      if (found && validation) setValidation({ ...validation, valid: false, errors: found });
      setStatus({ tone: 'bad', text: describeError(e) });
      return null;
    }
  };

  const onSave = async () => {
    setBusy(true);
    setStatus(null);
    const v = await save();
    if (v) setStatus({ tone: 'ok', text: `Saved as version ${v.version} (${shortHash(v.content_hash)}), signed by the server. Not distributed yet.` });
    setBusy(false);
  };

  /** One click: store the text as a signed version (if new) and distribute it. */
  const onDistribute = async () => {
    setBusy(true);
    setStatus(null);
    const v = await save();
    if (v) {
      try {
        const body = target === 'all' ? { version: v.version, all_runtimes: true } : { version: v.version, runtime_ids: chosen };
        const d = await api.post<Distribution>(`${base}/distributions`, body);
        distributions.reload();
        setStatus({
          tone: 'ok',
          text: `Version ${d.version} (${shortHash(d.content_hash)}) signed and distributed to ${d.target === 'all' ? 'all runtimes' : `${d.runtime_ids.length} runtime(s)`}. Runtimes apply it after checking the server's signature.`,
        });
      } catch (e) {
        setStatus({ tone: 'bad', text: describeError(e) });
      }
    }
    setBusy(false);
  };

  const onArchive = async () => {
    if (!window.confirm(`Archive ${name}? It takes no new versions or distributions; distributions made stay in force.`)) return;
    setBusy(true);
    try {
      await api.del(base);
      detail.reload();
      setStatus({ tone: 'ok', text: `${name} is archived. To move runtimes off it, distribute another policy.` });
    } catch (e) {
      setStatus({ tone: 'bad', text: describeError(e) });
    }
    setBusy(false);
  };

  const loadVersion = async (version: string) => {
    try {
      const v = await api.get<SignedVersion>(`${base}/versions/${seg(version)}`);
      setYaml(v.yaml);
      setLoadedFrom(v.version);
      setStatus({ tone: 'ok', text: `Version ${v.version} loaded into the editor.` });
    } catch (e) {
      setStatus({ tone: 'bad', text: describeError(e) });
    }
  };

  return (
    <section aria-labelledby="page-title">
      <PageHeader title={`Policy ${name}`}>
        {archived ? <Badge tone="neutral">archived {timeText(detail.data?.archived_at)}</Badge> : null}
        {writer && detail.data && !archived ? (
          <button type="button" className="danger" onClick={onArchive} disabled={busy}>
            Archive
          </button>
        ) : null}
      </PageHeader>
      {detail.data?.description ? <p>{detail.data.description}</p> : null}
      <ErrorBox error={versions.error} />
      {yaml === null ? <Loading what="the policy" /> : null}
      {yaml !== null ? (
        <div className="editor-grid">
          <div>
            <h2 id="editor-title">
              Edit{' '}
              <span className="muted">
                {loadedFrom ? `from version ${loadedFrom}` : 'a first version'}
              </span>
            </h2>
            <YamlEditor id="policy-yaml" label={`YAML of policy ${name}`} value={yaml} onChange={setYaml} problems={problems} readOnly={!writer} textareaRef={textarea} />
            <div className="validation" aria-live="polite" id="policy-validation" data-state={validating ? 'checking' : valid ? 'valid' : problems.length ? 'invalid' : 'unknown'}>
              {validating ? <span className="muted">Checking…</span> : null}
              {!validating && valid ? (
                <span>
                  <Badge tone="ok">valid</Badge> {validation?.rules} rules, autonomy {validation?.autonomy_mode}, hash <code>{shortHash(validation?.content_hash)}</code>
                  {unchanged ? ' — the newest version' : ''}
                </span>
              ) : null}
              {!validating && problems.length > 0 ? (
                <span>
                  <Badge tone="bad">invalid</Badge> {problems.length} problem{problems.length === 1 ? '' : 's'}
                </span>
              ) : null}
            </div>
            <ErrorBox error={validationError} />
            {problems.length > 0 ? (
              <ul className="problems" id="policy-yaml-problems">
                {problems.map((p, i) => (
                  <li key={i} data-line={p.line}>
                    <button type="button" className="link-button" onClick={() => goTo(p)}>
                      {p.line > 0 ? `Line ${p.line}, column ${p.column}` : 'Whole file'}
                    </button>
                    : <code>{p.field}</code> — {p.message}
                  </li>
                ))}
              </ul>
            ) : null}
            {writer && !archived ? (
              <div className="deploy">
                <fieldset>
                  <legend>Distribute to</legend>
                  <label className="check">
                    <input type="radio" name="target" checked={target === 'all'} onChange={() => setTarget('all')} /> All runtimes (present and future)
                  </label>
                  <label className="check">
                    <input type="radio" name="target" checked={target === 'chosen'} onChange={() => setTarget('chosen')} /> Chosen runtimes
                  </label>
                  {target === 'chosen' ? (
                    <div className="chosen">
                      {(runtimes.data?.runtimes ?? []).map((r) => (
                        <label key={r.runtime_id} className="check">
                          <input
                            type="checkbox"
                            checked={chosen.includes(r.runtime_id)}
                            onChange={(e) => setChosen((c) => (e.target.checked ? [...c, r.runtime_id] : c.filter((x) => x !== r.runtime_id)))}
                          />{' '}
                          <code>{shortId(r.runtime_id)}</code> ({r.status})
                        </label>
                      ))}
                    </div>
                  ) : null}
                </fieldset>
                <div className="buttons">
                  <button type="button" onClick={onSave} disabled={busy || !valid || unchanged}>
                    Save version
                  </button>
                  <button type="button" className="primary" id="sign-and-distribute" onClick={onDistribute} disabled={busy || !valid || (target === 'chosen' && chosen.length === 0)}>
                    Sign and distribute
                  </button>
                </div>
              </div>
            ) : (
              <p className="muted">
                {archived ? 'An archived policy takes no new version or distribution.' : `Your role (${me.user.role}) can validate and test; saving and distributing need operator.`}
              </p>
            )}
            <div aria-live="polite">
              {status ? (
                <p className={status.tone === 'ok' ? 'notice' : 'error'} role={status.tone === 'ok' ? 'status' : 'alert'} id="policy-status">
                  {status.text}
                </p>
              ) : null}
            </div>
          </div>
          <div>
            <Versions name={name} data={versions.data} onLoad={loadVersion} />
            <TestEvent name={name} versions={versions.data} />
            <h2>Distributions</h2>
            <ErrorBox error={distributions.error} />
            {distributions.data && distributions.data.distributions.length === 0 ? <p className="muted">Never distributed.</p> : null}
            <ul className="plain" id="distributions">
              {(distributions.data?.distributions ?? []).map((d) => (
                <li key={d.distribution_id}>
                  v{d.version} <code>{shortHash(d.content_hash)}</code> to {d.target === 'all' ? 'all runtimes' : `${d.runtime_ids.length} runtime(s)`}{' '}
                  <span className="muted">{timeText(d.distributed_at)}</span>
                </li>
              ))}
            </ul>
          </div>
        </div>
      ) : null}
    </section>
  );
}

function Versions({ name, data, onLoad }: { name: string; data: VersionList | null; onLoad: (v: string) => void }) {
  const [diff, setDiff] = useState<VersionDiff | null>(null);
  const [error, setError] = useState<string | null>(null);
  const list = data?.versions ?? [];
  const [from, setFrom] = useState('');
  const [to, setTo] = useState('');
  useEffect(() => {
    if (list.length >= 2 && !from && !to) {
      setTo(list[0]?.version ?? '');
      setFrom(list[1]?.version ?? '');
    }
  }, [list, from, to]);

  const compare = async (e: FormEvent) => {
    e.preventDefault();
    setError(null);
    try {
      setDiff(await api.get<VersionDiff>(`/v1/policies/${seg(name)}/diff`, { from, to }));
    } catch (err) {
      setError(describeError(err));
    }
  };

  return (
    <div>
      <h2>Versions</h2>
      {list.length === 0 ? <p className="muted">No version yet.</p> : null}
      {list.length > 0 ? (
        <TableWrap label="Versions">
          <table className="table" id="versions-table">
            <thead>
              <tr>
                <th scope="col">Version</th>
                <th scope="col">Hash</th>
                <th scope="col">Uploaded</th>
                <th scope="col">
                  <span className="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {list.map((v) => (
                <tr key={v.version} data-version={v.version}>
                  <td>v{v.version}</td>
                  <td>
                    <code title={v.content_hash}>{shortHash(v.content_hash)}</code>
                  </td>
                  <td>
                    {timeText(v.uploaded_at)} <span className="muted">by {v.uploaded_by.kind === 'runtime' ? `runtime ${shortId(v.uploaded_by.id, 6)}` : 'a person'}</span>
                  </td>
                  <td>
                    <button type="button" className="link-button" onClick={() => onLoad(v.version)} aria-label={`Load version ${v.version} into the editor`}>
                      Load
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </TableWrap>
      ) : null}
      {list.length >= 2 ? (
        <form className="inline-form" onSubmit={compare} aria-label="Compare versions">
          <label>
            From
            <select value={from} onChange={(e) => setFrom(e.target.value)}>
              {list.map((v) => (
                <option key={v.version} value={v.version}>
                  v{v.version}
                </option>
              ))}
            </select>
          </label>
          <label>
            To
            <select value={to} onChange={(e) => setTo(e.target.value)}>
              {list.map((v) => (
                <option key={v.version} value={v.version}>
                  v{v.version}
                </option>
              ))}
            </select>
          </label>
          <button type="submit">Compare</button>
        </form>
      ) : null}
      <ErrorBox error={error} />
      {diff ? <DiffView diff={diff} /> : null}
    </div>
  );
}

function json(value: unknown): string {
  return value === undefined ? '—' : JSON.stringify(value);
}

export function DiffView({ diff }: { diff: VersionDiff }) {
  const d = diff.diff;
  if (diff.equal) return <p id="diff-view">v{diff.from.version} and v{diff.to.version} mean the same (equal hashes).</p>;
  return (
    <div id="diff-view" className="diff" aria-label={`Differences from v${diff.from.version} to v${diff.to.version}`}>
      <h3>
        v{diff.from.version} → v{diff.to.version}
      </h3>
      {d.fields.length > 0 ? (
        <ul className="plain">
          {d.fields.map((f) => (
            <li key={f.field}>
              <code>{f.field}</code>: <del>{json(f.before)}</del> → <ins>{json(f.after)}</ins>
            </li>
          ))}
        </ul>
      ) : null}
      {d.added.map((r) => (
        <p key={'a' + r.id} className="diff-added">
          + rule <code>{r.id}</code> at {r.index + 1}: {json(r.rule)}
        </p>
      ))}
      {d.removed.map((r) => (
        <p key={'r' + r.id} className="diff-removed">
          − rule <code>{r.id}</code> (was {r.index + 1})
        </p>
      ))}
      {d.changed.map((r) => (
        <div key={'c' + r.id} className="diff-changed">
          ~ rule <code>{r.id}</code>
          <ul className="plain">
            {r.changes.map((f) => (
              <li key={f.field}>
                <code>{f.field}</code>: <del>{json(f.before)}</del> → <ins>{json(f.after)}</ins>
              </li>
            ))}
          </ul>
        </div>
      ))}
      {d.moved.map((r) => (
        <p key={'m' + r.id}>
          ↕ rule <code>{r.id}</code> moved from {r.before + 1} to {r.after + 1}
        </p>
      ))}
    </div>
  );
}

function TestEvent({ name, versions }: { name: string; versions: VersionList | null }) {
  const list = versions?.versions ?? [];
  const [version, setVersion] = useState('');
  const [answer, setAnswer] = useState<TrialAnswer | null>(null);
  const [error, setError] = useState<string | null>(null);
  const chosen = version || list[0]?.version || '';

  const submit = async (e: FormEvent<HTMLFormElement>) => {
    e.preventDefault();
    const form = new FormData(e.currentTarget);
    const text = (k: string) => String(form.get(k) ?? '').trim();
    const body: Record<string, unknown> = {
      prompt_text: String(form.get('prompt_text') ?? ''),
      prompt_type: text('prompt_type'),
      confidence: text('confidence'),
    };
    for (const k of ['tool_id', 'repo', 'branch', 'ci_status']) if (text(k)) body[k] = text(k);
    if (text('session_tags')) body.session_tags = text('session_tags').split(',').map((t) => t.trim()).filter(Boolean);
    setError(null);
    try {
      setAnswer(await api.post<TrialAnswer>(`/v1/policies/${seg(name)}/versions/${seg(chosen)}/test`, body));
    } catch (err) {
      setAnswer(null);
      setError(describeError(err));
    }
  };

  if (list.length === 0) return null;
  return (
    <div>
      <h2>Test an event</h2>
      <form className="test-form" onSubmit={submit} aria-label="Test an event against a version">
        <label>
          Version
          <select value={chosen} onChange={(e) => setVersion(e.target.value)} name="version">
            {list.map((v) => (
              <option key={v.version} value={v.version}>
                v{v.version}
              </option>
            ))}
          </select>
        </label>
        <label>
          Prompt text <span className="muted">(sent to the server for this test only, never stored)</span>
          <input name="prompt_text" defaultValue="Continue? [y/n]" />
        </label>
        <label>
          Prompt type
          <select name="prompt_type" defaultValue="yes_no">
            <option>yes_no</option>
            <option>confirm_enter</option>
            <option>multiple_choice</option>
            <option>free_text</option>
          </select>
        </label>
        <label>
          Confidence
          <select name="confidence" defaultValue="high">
            <option>high</option>
            <option>medium</option>
            <option>low</option>
          </select>
        </label>
        <label>
          Tool
          <input name="tool_id" placeholder="*" />
        </label>
        <label>
          Repository
          <input name="repo" />
        </label>
        <label>
          Branch
          <input name="branch" />
        </label>
        <label>
          CI status
          <select name="ci_status" defaultValue="">
            <option value="">unknown</option>
            <option>passing</option>
            <option>failing</option>
          </select>
        </label>
        <label>
          Session tags (comma-separated)
          <input name="session_tags" />
        </label>
        <button type="submit">Test</button>
      </form>
      <ErrorBox error={error} />
      {answer ? (
        <dl className="kv" id="test-result">
          <dt>Action taken</dt>
          <dd>
            <span className={`action action-${answer.action_taken}`}>{answer.action_taken}</span>
            {answer.suggested_action ? ` (suggested ${answer.suggested_action})` : ''}
            {answer.reply_value ? ` replying "${answer.reply_value}"` : ''}
          </dd>
          <dt>Rule</dt>
          <dd>{answer.matched_rule || '(a default)'}</dd>
          <dt>Why</dt>
          <dd>{answer.explanation}</dd>
          <dt>Risk</dt>
          <dd>
            {answer.risk_level} {answer.risk_reasons.length ? `(${answer.risk_reasons.join(', ')})` : ''}
          </dd>
        </dl>
      ) : null}
    </div>
  );
}
