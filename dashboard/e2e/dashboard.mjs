// The dashboard in a real browser: headless Debian Chromium driven by playwright-core, against
// a real atlasbridge-server on a real PostgreSQL, with a real atlasbridged that the Rust
// harness (server/tests/e2e/dashboard.rs) starts when this script asks for it.
//
// The flow of issue 9: log in, see the runtime appear, watch a decision arrive live (with no
// layout shift), find it in the audit trail with a green chain indicator, edit a policy with an
// error (the line is marked), fix it, sign and distribute it, see the runtime apply it and its
// next decision follow it. Then every other screen, the exports, axe-core on every screen, and
// a pass at phone width (390 px) without horizontal overflow. A screenshot of each screen goes
// to test-results/screenshots/.
//
// Environment: DASHBOARD_URL, DASHBOARD_ORG, DASHBOARD_EMAIL, DASHBOARD_PASSWORD, and CHROMIUM
// (default /usr/bin/chromium). Talks to the harness over stdio: prints `@@start-daemon` and
// reads one JSON line `{socket, runtime_id}` back.

import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { createConnection } from 'node:net';
import { createInterface } from 'node:readline';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';
import { compareTypes } from './api-types.mjs';

const require = createRequire(import.meta.url);
const env = (name, fallback) => {
  const value = process.env[name] ?? fallback;
  if (value === undefined) throw new Error(`${name} is not set`);
  return value;
};
const BASE = env('DASHBOARD_URL').replace(/\/$/, '');
const ORG = env('DASHBOARD_ORG');
const EMAIL = env('DASHBOARD_EMAIL');
const PASSWORD = env('DASHBOARD_PASSWORD');
const CHROMIUM = env('CHROMIUM', '/usr/bin/chromium');
const SHOTS = new URL('../test-results/screenshots/', import.meta.url).pathname;
const POLICY = 'dashboard-e2e';
const WAIT = 20_000;

rmSync(SHOTS, { recursive: true, force: true });
mkdirSync(SHOTS, { recursive: true });

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
let step = 0;
const log = (text) => console.log(`[dashboard e2e] ${text}`);
function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

/** One JSON-RPC call to the daemon's socket (newline-delimited JSON). */
function daemonCall(socket, method, params) {
  return new Promise((resolve, reject) => {
    const conn = createConnection(socket);
    let buffer = '';
    const timer = setTimeout(() => {
      conn.destroy();
      reject(new Error(`${method}: no answer from the daemon`));
    }, WAIT);
    conn.on('connect', () => conn.write(JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }) + '\n'));
    conn.on('data', (chunk) => {
      buffer += chunk.toString('utf8');
      const nl = buffer.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      conn.end();
      const message = JSON.parse(buffer.slice(0, nl));
      if (message.error) reject(new Error(`${method}: ${JSON.stringify(message.error)}`));
      else resolve(message.result);
    });
    conn.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

/** A prompt for the daemon to decide: metadata only reaches the server. */
function decide(socket, session, prompt) {
  return daemonCall(socket, 'decision.evaluate', {
    session_id: session,
    prompt_id: prompt,
    prompt_type: 'yes_no',
    prompt_text: 'Continue? [y/n]',
    confidence: 'high',
  });
}

const AXE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
const axeFindings = [];

/** axe-core's WCAG 2 A and AA rules on the page as it is. */
async function accessible(page, screen) {
  if (!(await page.evaluate(() => 'axe' in window))) await page.evaluate(AXE);
  const result = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const r = await window.axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map((n) => n.target.join(' ')) }));
  });
  for (const v of result) axeFindings.push({ screen, ...v });
  log(`axe ${screen}: ${result.length === 0 ? 'no violations' : result.map((v) => v.id).join(', ')}`);
}

async function shot(page, name) {
  step += 1;
  const file = `${SHOTS}${String(step).padStart(2, '0')}-${name}.png`;
  await page.screenshot({ path: file, fullPage: true });
  log(`screenshot ${file}`);
}

async function heading(page, text) {
  await page.locator('h1', { hasText: text }).first().waitFor({ timeout: WAIT });
}

async function nav(page, label, title) {
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: label, exact: true }).click();
  await heading(page, title ?? label);
}

async function noHorizontalOverflow(page, screen) {
  const { scroll, width } = await page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, width: window.innerWidth }));
  check(scroll <= width, `${screen} at ${width}px overflows horizontally (${scroll}px wide)`);
}
/** Starts recording layout-shift entries (with their sources) in `window.__shifts`. */
async function watchShifts(page) {
  await page.evaluate(() => {
    window.__shifts = [];
    window.__shiftObserver?.disconnect();
    window.__shiftObserver = new PerformanceObserver((list) => {
      for (const e of list.getEntries()) {
          window.__shifts.push({
            value: e.value,
            hadRecentInput: e.hadRecentInput,
            sources: (e.sources ?? []).map((s) => ({
              node: s.node ? `${s.node.nodeName}.${s.node.className ?? ''}#${s.node.id ?? ''} ${(s.node.textContent ?? '').slice(0, 40)}` : null,
              from: [s.previousRect.x, s.previousRect.y, s.previousRect.width, s.previousRect.height],
              to: [s.currentRect.x, s.currentRect.y, s.currentRect.width, s.currentRect.height],
            })),
          });
        }
    });
    window.__shiftObserver.observe({ type: 'layout-shift', buffered: false });
  });
}

/** The layout shifts recorded since `watchShifts`: none may have happened. */
async function noShifts(page, what) {
  await page.waitForTimeout(600);
  const shifts = await page.evaluate(() => window.__shifts);
  check(shifts.length === 0, `no layout shift while ${what}: ${JSON.stringify(shifts)}`);
}

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});

let failed = false;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, acceptDownloads: true });
  const page = await context.newPage();
  const consoleErrors = [];
  // While the test keeps the server down on purpose, failed connections are expected.
  let outage = false;
  page.on('console', (m) => {
    // The browser logs every 401 as an error: the login page's session probe and the wrong
    // password tried on purpose. Anything else (a CSP violation, a script error) fails.
    if (m.type() !== 'error' || /status of 401 \(Unauthorized\)/.test(m.text())) return;
    if (outage && /net::ERR_CONNECTION_|WebSocket connection/.test(m.text())) return;
    consoleErrors.push(m.text());
  });
  page.on('pageerror', (e) => consoleErrors.push(String(e)));

  // --- The hand-written API types against the document this server serves ---------------------
  const openapi = await (await fetch(`${BASE}/v1/openapi.json`)).json();
  const drift = compareTypes(readFileSync(new URL('../src/api/types.ts', import.meta.url), 'utf8'), openapi);
  check(drift.errors.length === 0, `src/api/types.ts reads what the server does not send:\n${drift.errors.join('\n')}`);
  log(`API types match the served OpenAPI document (${drift.notes.length} server fields unused by the dashboard)`);

  // --- Login --------------------------------------------------------------------------------
  const first = await page.goto(`${BASE}/`);
  check(first?.status() === 200, `GET / answered ${first?.status()}`);
  const csp = first?.headers()['content-security-policy'] ?? '';
  check(csp.includes("script-src 'self'"), `the page has the strict CSP: ${csp}`);
  await heading(page, 'Sign in to AtlasBridge');
  await page.keyboard.press('Tab');
  check((await page.evaluate(() => document.activeElement?.id)) === 'login-org', 'Tab reaches the organisation field first');
  await accessible(page, 'login');
  await shot(page, 'login');

  // A wrong password: the server's specific message, not a generic failure.
  await page.getByLabel('Organisation').fill(ORG);
  await page.getByLabel('Email').fill(EMAIL);
  await page.getByLabel('Password').fill('not the password at all');
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await page.locator('#login-error', { hasText: 'Organisation, email or password is wrong' }).waitFor({ timeout: WAIT });
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await heading(page, 'Fleet');
  await page.locator('[data-live="open"]').waitFor({ timeout: WAIT });
  log('signed in; the live stream is open');

  // --- The runtime appears --------------------------------------------------------------------
  console.log('@@start-daemon');
  const reply = await lines.next();
  check(!reply.done, 'the harness answered with the daemon');
  const daemon = JSON.parse(reply.value);
  log(`daemon ${daemon.runtime_id} on ${daemon.socket}`);
  const runtimeRow = page.locator(`tr[data-runtime="${daemon.runtime_id}"]`);
  await runtimeRow.waitFor({ timeout: WAIT });
  await runtimeRow.locator('.badge', { hasText: 'active' }).waitFor({ timeout: WAIT });
  await page.locator(`#fleet-events li[data-kind="runtime_status"][data-runtime="${daemon.runtime_id}"]`, { hasText: 'connected' }).waitFor({ timeout: WAIT });
  log('the runtime appeared in the fleet, active, and its connection is among the last fleet events');
  await accessible(page, 'fleet');
  await shot(page, 'fleet-runtime-appeared');

  // --- A decision arrives live, moving nothing ------------------------------------------------
  await page.waitForFunction(() => /^\d+$/.test(document.querySelector('[data-figure="decisions-today"]')?.textContent ?? ''), null, { timeout: WAIT });
  const before = Number(await page.locator('[data-figure="decisions-today"]').textContent());
  await watchShifts(page);
  const firstAnswer = await decide(daemon.socket, 'dash-live-1', 'p1');
  check(firstAnswer.action === 'require_human', `the built-in policy asks a person: ${JSON.stringify(firstAnswer)}`);
  await page.locator('#recent-decisions li[data-slot="0"][data-session="dash-live-1"]').waitFor({ timeout: WAIT });
  await page.locator('[data-figure="decisions-today"]', { hasText: String(before + 1) }).waitFor({ timeout: WAIT });
  await noShifts(page, 'the decision arrived on the fleet overview');
  log(`the decision arrived live (decisions today ${before} -> ${before + 1}), layout shifts: 0`);
  await shot(page, 'fleet-live-decision');

  // --- The audit trail, green chain indicator ----------------------------------------------------
  await nav(page, 'Audit trail');
  const liveRow = page.locator('#audit-table tbody tr', { hasText: 'dash-live-1' }).first();
  await liveRow.waitFor({ timeout: WAIT });
  await page.locator('#audit-table tbody tr[data-chain="verified"]', { hasText: 'dash-live-1' }).first().waitFor({ timeout: WAIT });
  const dot = liveRow.locator('[data-chain]');
  check((await dot.getAttribute('aria-label')) === 'Chain verified', 'the indicator says so in words');
  const colour = await dot.evaluate((el) => getComputedStyle(el).backgroundColor);
  check(colour === 'rgb(21, 128, 61)', `the verified indicator is green: ${colour}`);
  log('the decision is in the audit trail, chain verified (green)');
  await accessible(page, 'audit');
  await shot(page, 'audit-trail');

  // Search by a filter the API offers: the session.
  await page.getByLabel('Session').fill('dash-live-1');
  await page.getByRole('button', { name: 'Search', exact: true }).click();
  await page.waitForURL(/session_id=dash-live-1/);
  // The rows of the previous search stay until the new ones arrive: wait for the search's.
  await page.waitForFunction(
    () => {
      const rows = [...document.querySelectorAll('#audit-table tbody tr[data-chain]')];
      return rows.length > 0 && rows.every((r) => r.textContent.includes('dash-live-1'));
    },
    null,
    { timeout: WAIT },
  );
  check((await page.locator('#audit-table tbody tr[data-chain]').count()) === 1, 'the session filter keeps one decision');

  // Exports of the search.
  const [csvDownload] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Export CSV' }).click()]);
  const csv = readFileSync(await csvDownload.path(), 'utf8').trim().split('\r\n');
  check(csv[0]?.startsWith('runtime_id,seq,entry_id,occurred_at,session_id'), `CSV header: ${csv[0]}`);
  check(csv.length === 2 && csv[1].includes('dash-live-1') && csv[1].includes(',verified,'), `CSV rows: ${csv.join(' | ')}`);
  const [jsonDownload] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Export JSON' }).click()]);
  const exported = JSON.parse(readFileSync(await jsonDownload.path(), 'utf8'));
  check(exported.decisions.length === 1 && exported.decisions[0].session_id === 'dash-live-1', 'JSON export holds the decision');
  check(!JSON.stringify(exported).includes('Continue? [y/n]'), 'no prompt text reaches the export');
  log('CSV and JSON exports hold the searched decision');

  // --- Chains that are not sound: a gap, a change after sealing ---------------------------------
  const states = async () =>
    Object.fromEntries(
      await page.locator('#audit-table tbody tr[data-seq]').evaluateAll((rows) => rows.map((r) => [r.getAttribute('data-seq'), r.getAttribute('data-chain')])),
    );
  const gapRuntime = process.env.DASHBOARD_GAP_RUNTIME;
  if (gapRuntime) {
    await page.goto(`${BASE}/audit?runtime_id=${encodeURIComponent(gapRuntime)}`);
    await page.locator('tr[data-marker="gap"]', { hasText: 'seq 4–6' }).waitFor({ timeout: WAIT });
    const seen = await states();
    const want = { 0: 'verified', 1: 'verified', 2: 'verified', 3: 'verified', 7: 'pending', 8: 'pending', 9: 'pending' };
    check(JSON.stringify(seen) === JSON.stringify(Object.fromEntries(Object.entries(want).map(([k, v]) => [String(k), v]))), `gap chain states: ${JSON.stringify(seen)}`);
    const markerBefore = await page.locator('#audit-table tbody tr').evaluateAll((rows) => {
      const i = rows.findIndex((r) => r.getAttribute('data-marker') === 'gap');
      return rows[i + 1]?.getAttribute('data-seq');
    });
    check(markerBefore === '3', `the gap marker sits above seq 3, below seq 7 (${markerBefore})`);
    log('a gap of seq 4–6 is marked, the entries beyond it are not shown as verified');
    await shot(page, 'audit-gap-marker');
  }
  const brokenRuntime = process.env.DASHBOARD_BROKEN_RUNTIME;
  if (brokenRuntime) {
    await page.goto(`${BASE}/audit?runtime_id=${encodeURIComponent(brokenRuntime)}`);
    await page.locator('tr[data-marker="break"]', { hasText: 'broken at seq 3 (hash_mismatch)' }).waitFor({ timeout: WAIT });
    const seen = await states();
    const want = { 0: 'verified', 1: 'verified', 2: 'verified', 3: 'tampered', 4: 'broken', 5: 'broken' };
    check(JSON.stringify(seen) === JSON.stringify(Object.fromEntries(Object.entries(want).map(([k, v]) => [String(k), v]))), `broken chain states: ${JSON.stringify(seen)}`);
    const red = await page.locator('tr[data-seq="3"] [data-chain]').evaluate((el) => getComputedStyle(el).backgroundColor);
    check(red === 'rgb(185, 28, 28)', `the tampered entry's indicator is red: ${red}`);
    log('a chain changed at seq 3 is marked broken there, red from that entry on');
    await accessible(page, 'audit-broken');
    await shot(page, 'audit-break-marker');
  }

  // --- The policy editor: an error marked at its line, fixed, distributed -----------------------
  await nav(page, 'Policies');
  await accessible(page, 'policies');
  await page.getByLabel('New policy name').fill(POLICY);
  await page.getByRole('button', { name: 'Create', exact: true }).click();
  await heading(page, `Policy ${POLICY}`);
  await page.locator('#policy-validation[data-state="valid"]').waitFor({ timeout: WAIT });
  const broken = [
    'policy_version: "1"',
    `name: ${POLICY}`,
    'autonomy_mode: full',
    'rules:',
    '  - id: confident-yes',
    '    match:',
    '      prompt_type: [yes_nope]',
    '      min_confidence: high',
    '    action:',
    '      type: auto_reply',
    '      value: "y"',
    '',
  ].join('\n');
  const editor = page.getByLabel(`YAML of policy ${POLICY}`);
  // No keyboard trap: Tab indents inside the editor, Esc then Tab leaves it.
  await editor.focus();
  await page.keyboard.press('Escape');
  await page.keyboard.press('Tab');
  check((await page.evaluate(() => document.activeElement?.id)) !== 'policy-yaml', 'Esc then Tab leaves the editor');
  await editor.fill(broken);
  await page.locator('#policy-validation[data-state="invalid"]').waitFor({ timeout: WAIT });
  await page.locator('.gutter-line[data-line="7"][data-error="true"]').waitFor({ timeout: WAIT });
  const marked = await page.locator('.gutter-line[data-error="true"]').evaluateAll((els) => els.map((e) => e.getAttribute('data-line')));
  check(marked.join(',') === '7', `only line 7 is marked: ${marked}`);
  await page.locator('#policy-yaml-problems li[data-line="7"]').waitFor();
  check(await page.locator('#sign-and-distribute').isDisabled(), 'an invalid policy cannot be distributed');
  log(`the error is marked at line 7: ${await page.locator('#policy-yaml-problems li').first().textContent()}`);
  await accessible(page, 'policy-editor-error');
  await shot(page, 'policy-editor-error');

  await editor.fill(broken.replace('[yes_nope]', '[yes_no]'));
  await page.locator('#policy-validation[data-state="valid"]').waitFor({ timeout: WAIT });
  check((await page.locator('.gutter-line[data-error="true"]').count()) === 0, 'no line is marked once fixed');
  await page.locator('#sign-and-distribute').click();
  await page.locator('#policy-status', { hasText: 'signed and distributed to all runtimes' }).waitFor({ timeout: WAIT });
  const distributed = await page.evaluate(async (name) => {
    const r = await fetch(`/v1/policies/${encodeURIComponent(name)}`);
    return r.json();
  }, POLICY);
  const hash = distributed.versions.find((v) => v.version === distributed.latest_version).content_hash;
  log(`version ${distributed.latest_version} (${hash.slice(0, 12)}) signed and distributed`);
  await shot(page, 'policy-editor-distributed');

  // History: the diff between the starter and the fix, and a test event.
  await page.locator('#versions-table tr[data-version="2"]').waitFor({ timeout: WAIT });
  await page.getByRole('button', { name: 'Compare' }).click();
  await page.locator('#diff-view').waitFor({ timeout: WAIT });
  const diffText = await page.locator('#diff-view').textContent();
  check(diffText.includes('confident-yes') && diffText.includes('require_human') && diffText.includes('auto_reply'), `the diff names the changed rule and action: ${diffText}`);
  await page.getByRole('button', { name: 'Test', exact: true }).click();
  await page.locator('#test-result', { hasText: 'auto_reply' }).waitFor({ timeout: WAIT });
  log('version history diff and test event work');
  await accessible(page, 'policy-history');
  await shot(page, 'policy-history-diff-test');

  // --- The runtime applies it; its next decision follows it -------------------------------------
  await nav(page, 'Fleet');
  await runtimeRow.getByRole('link').click();
  await heading(page, 'Runtime');
  await page.locator('#runtime-policy [data-in-sync="true"]').waitFor({ timeout: WAIT });
  await page.locator('#runtime-chains [data-stream="trace"][data-status="continuous"]').waitFor({ timeout: WAIT });
  await page.locator('#runtime-checkpoints tr[data-verdict="verified"]').first().waitFor({ timeout: WAIT });
  log('the runtime reports the distributed policy loaded (in sync); its checkpoints are verified');
  await accessible(page, 'runtime');
  await shot(page, 'runtime-detail');

  await nav(page, 'Audit trail');
  await page.locator('#audit-table[aria-busy="false"]').waitFor({ timeout: WAIT });
  await page.waitForLoadState('networkidle', { timeout: 5000 }).catch(() => {});
  await watchShifts(page);
  const next = await decide(daemon.socket, 'dash-live-2', 'p2');
  check(next.action === 'auto_reply' && next.policy_hash === hash, `the next decision follows the distributed policy: ${JSON.stringify(next)}`);
  await page.locator('#show-new').waitFor({ timeout: WAIT });
  await noShifts(page, 'the decision arrived on the audit trail');
  await page.locator('#show-new').click({ timeout: WAIT });
  const followed = page.locator('#audit-table tbody tr[data-chain="verified"][data-action="auto_reply"]', { hasText: 'dash-live-2' });
  await followed.waitFor({ timeout: WAIT });
  check((await followed.locator('[data-policy-hash]').getAttribute('data-policy-hash')) === hash, 'the audit trail shows the distributed hash');
  log('the next decision was auto_reply under the distributed policy, shown verified');
  await shot(page, 'audit-after-distribution');

  // The runtime's own audit log, searched by event type: it applied the policy.
  await page.getByRole('link', { name: 'Runtime audit events' }).click();
  await page.getByLabel('Event types (comma-separated)').fill('cloud_policy_applied');
  await page.getByRole('button', { name: 'Search', exact: true }).click();
  await page.waitForURL(/stream=audit.*event_type=cloud_policy_applied/);
  await page.waitForFunction(
    (id) => {
      const rows = [...document.querySelectorAll('#audit-table tbody tr[data-chain]')];
      return rows.length > 0 && rows.every((r) => r.textContent.includes('cloud_policy_applied')) && rows.some((r) => r.querySelector(`a[title="${id}"]`) && r.getAttribute('data-chain') === 'verified');
    },
    daemon.runtime_id,
    { timeout: WAIT },
  );
  log("the runtime's audit log says it applied the policy, its chain verified");
  await accessible(page, 'audit-events');
  await shot(page, 'audit-events');

  // --- The other screens ------------------------------------------------------------------------
  await nav(page, 'Sessions');
  await page.locator('a', { hasText: 'dash-live-2' }).waitFor({ timeout: WAIT });
  await accessible(page, 'sessions');
  await shot(page, 'sessions');
  await page.locator('a', { hasText: 'dash-live-2' }).click();
  await heading(page, 'Session dash-live-2');
  await page.locator('#session-timeline li').first().waitFor({ timeout: WAIT });
  check(!(await page.content()).includes('Continue? [y/n]'), 'no prompt text on the timeline');
  await accessible(page, 'session-timeline');
  await shot(page, 'session-timeline');

  await nav(page, 'Risk');
  const cell = page.locator('#heatmap td.heat-cell a').first();
  await cell.waitFor({ timeout: WAIT });
  await accessible(page, 'risk');
  await shot(page, 'risk-heatmap');
  await cell.click();
  await heading(page, 'Audit trail');
  await page.waitForURL(/from=.*to=/);
  await page.locator('#audit-table tbody tr[data-chain]').first().waitFor({ timeout: WAIT });
  log('a heat map cell drills down to its decisions');
  await shot(page, 'risk-drilldown');

  await nav(page, 'Settings');
  await page.locator('#keys-table').waitFor({ timeout: WAIT });
  await page.locator('#users-table', { hasText: EMAIL }).waitFor({ timeout: WAIT });
  // An API key: its secret shown once, then revoked.
  await page.getByLabel('Label').fill('dashboard-e2e key');
  await page.getByRole('button', { name: 'Create key' }).click();
  const secret = await page.getByLabel('The new API key').inputValue({ timeout: WAIT });
  check(/^abk_[0-9a-f]{16}_/.test(secret), `the new key is shown once: ${secret.slice(0, 8)}…`);
  const keyRow = page.locator('#keys-table tr', { hasText: 'dashboard-e2e key' });
  page.once('dialog', (dialog) => dialog.accept());
  await keyRow.getByRole('button', { name: 'Revoke' }).click();
  await keyRow.locator('.badge', { hasText: 'revoked' }).waitFor({ timeout: WAIT });
  // A user: added as operator, made a viewer, disabled.
  const userForm = page.getByRole('form', { name: 'New user' });
  await userForm.getByLabel('Email').fill('ops@example.com');
  await userForm.getByLabel('Role').selectOption('operator');
  await userForm.getByLabel(/^Password/).fill('a long enough password');
  await userForm.getByRole('button', { name: 'Add user' }).click();
  const userRow = page.locator('#users-table tr', { hasText: 'ops@example.com' });
  await userRow.waitFor({ timeout: WAIT });
  await userRow.getByLabel('Role of ops@example.com').selectOption('viewer');
  await page.locator('.notice', { hasText: 'ops@example.com updated.' }).waitFor({ timeout: WAIT });
  await userRow.getByRole('button', { name: 'Disable ops@example.com' }).click();
  await userRow.locator('.badge', { hasText: 'disabled' }).waitFor({ timeout: WAIT });
  check((await userRow.getByLabel('Role of ops@example.com').inputValue()) === 'viewer', 'the role change held');
  log('settings: a key created (shown once) and revoked; a user added, demoted and disabled');
  await accessible(page, 'settings');
  await shot(page, 'settings');

  // --- An outage: the live stream reconnects with its backoff and the screen refetches --------------
  await nav(page, 'Fleet');
  await page.locator('[data-live="open"]').waitFor({ timeout: WAIT });
  const ask = async (marker, answer) => {
    console.log(marker);
    const reply = await lines.next();
    check(!reply.done && reply.value.trim() === answer, `the harness answered ${marker} with ${answer}`);
  };
  outage = true;
  await ask('@@stop-server', 'stopped');
  await page.locator('[data-live="open"]').waitFor({ state: 'detached', timeout: WAIT });
  // The runtime decides on its own while the server is away; it uploads the entry later.
  const offline = await decide(daemon.socket, 'dash-offline', 'p3');
  check(offline.action === 'auto_reply', `the daemon decides without the server: ${JSON.stringify(offline)}`);
  await ask('@@start-server', 'started');
  await page.locator('[data-live="open"]').waitFor({ timeout: 45_000 });
  await page.locator('#recent-decisions li[data-session="dash-offline"]').waitFor({ timeout: 45_000 });
  outage = false;
  log('after an outage the live stream came back by itself and the decision made meanwhile is shown');
  await shot(page, 'fleet-after-outage');

  // --- Phone width -------------------------------------------------------------------------------
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, storageState: await context.storageState(), isMobile: true, hasTouch: true });
  const small = await phone.newPage();
  small.on('pageerror', (e) => consoleErrors.push(String(e)));
  const screens = [
    ['/', 'Fleet'],
    [`/runtimes/${encodeURIComponent(daemon.runtime_id)}`, 'Runtime'],
    ['/sessions', 'Sessions'],
    [`/runtimes/${encodeURIComponent(daemon.runtime_id)}/sessions/dash-live-2`, 'Session dash-live-2'],
    ['/audit', 'Audit trail'],
    [`/policies/${POLICY}`, `Policy ${POLICY}`],
    ['/risk', 'Risk'],
    ['/settings', 'Settings'],
  ];
  for (const [path, title] of screens) {
    await small.goto(`${BASE}${path}`);
    await heading(small, title);
    await small.waitForLoadState('networkidle', { timeout: 5000 }).catch(() => {});
    await noHorizontalOverflow(small, title);
    await shot(small, `phone-${title.toLowerCase().replace(/[^a-z0-9]+/g, '-')}`);
  }
  await small.getByRole('button', { name: 'Menu' }).click();
  await small.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Policies' }).click();
  await heading(small, 'Policies');
  log('every screen fits 390 px without horizontal overflow; the menu works');
  await phone.close();

  // --- Archive: the policy stays readable, takes nothing new -----------------------------------------
  await page.goto(`${BASE}/policies/${POLICY}`);
  await heading(page, `Policy ${POLICY}`);
  page.once('dialog', (dialog) => dialog.accept());
  await page.getByRole('button', { name: 'Archive' }).click();
  await page.locator('.badge', { hasText: 'archived' }).waitFor({ timeout: WAIT });
  check((await page.locator('#sign-and-distribute').count()) === 0, 'an archived policy offers no distribution');
  log('archived: readable, no distribute button');

  // --- Single sign-on: a viewer, through the identity provider and back ----------------------------
  const ssoEmail = process.env.DASHBOARD_SSO_EMAIL;
  if (ssoEmail) {
    const ssoContext = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const sso = await ssoContext.newPage();
    sso.on('pageerror', (e) => consoleErrors.push(String(e)));
    await sso.goto(`${BASE}/`);
    await heading(sso, 'Sign in to AtlasBridge');
    await sso.getByRole('link', { name: 'Sign in with SSO' }).click();
    await heading(sso, 'Fleet');
    const who = sso.locator('.user-name', { hasText: '· viewer' });
    await who.waitFor({ timeout: WAIT });
    check((await who.getAttribute('title')).startsWith(`${ssoEmail} (viewer)`), `signed in as ${ssoEmail}`);
    await sso.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Policies' }).click();
    await heading(sso, 'Policies');
    check((await sso.getByLabel('New policy name').count()) === 0, 'a viewer is offered no policy creation');
    await sso.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Settings' }).click();
    await heading(sso, 'Settings');
    await sso.getByText('API keys and users are managed by admins and owners.').waitFor({ timeout: WAIT });
    await shot(sso, 'sso-viewer-settings');
    log('signed in by SSO as a viewer; the screens offer a viewer no writes');
    await ssoContext.close();
  }

  // --- Sign out -------------------------------------------------------------------------------------
  await page.getByRole('button', { name: 'Sign out' }).click();
  await heading(page, 'Sign in to AtlasBridge');

  check(consoleErrors.length === 0, `no console errors (CSP violations included): ${consoleErrors.join(' | ')}`);
  check(axeFindings.length === 0, `axe-core found violations: ${JSON.stringify(axeFindings, null, 1)}`);
  log(`passed: ${step} screenshots, axe clean on every screen checked`);
} catch (error) {
  failed = true;
  console.error(`[dashboard e2e] FAILED: ${error instanceof Error ? error.stack : error}`);
  for (const ctx of browser.contexts()) {
    for (const p of ctx.pages()) {
      await p.screenshot({ path: `${SHOTS}failure-${Date.now()}.png`, fullPage: true }).catch(() => {});
    }
  }
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
