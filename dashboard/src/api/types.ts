// The shapes of the server's `/v1` API that the dashboard reads, written by hand from
// server/src/api (the OpenAPI document is derived from the same structs). Only what the
// dashboard uses is here; the browser test runs every screen against the real server, so a
// drift shows there.

export type Role = 'viewer' | 'operator' | 'admin' | 'owner';

export interface User {
  user_id: string;
  email: string;
  display_name: string;
  role: Role;
  disabled: boolean;
  has_password: boolean;
  sso_linked: boolean;
  created_at: string;
}

export interface Me {
  org_id: string;
  user: User;
  session_id: string;
  csrf_token: string;
  expires_at: string;
}

export interface LoginAnswer {
  session_token: string;
  csrf_token: string;
  expires_at: string;
  user: User;
}

export type ChainState = 'continuous' | 'gap' | 'broken';

export interface Chain {
  stream: 'trace' | 'audit' | string;
  status: ChainState | string;
  next_seq: number;
  max_seq: number | null;
  gap_from: number | null;
  gap_to: number | null;
  broken_at: number | null;
  broken_kind: string | null;
  broken_detail: string | null;
  updated_at: string;
}

export interface Runtime {
  runtime_id: string;
  status: 'active' | 'inactive' | string;
  witness_status: string;
  witness_detail: string;
  agent_version: string;
  edition: string;
  first_seen: string;
  last_seen: string;
  last_heartbeat: string | null;
  flag_count: number;
  chains: Chain[];
}

export interface Flag {
  kind: string;
  detail: string;
  flagged_at: string;
}

export interface Checkpoint {
  checkpoint_seq: number;
  checkpoint_hash: string;
  epoch: number;
  seq: number | null;
  verdict: 'verified' | 'unverifiable' | 'bad' | string;
  received_at: string;
}

export interface RuntimeDetail extends Runtime {
  flags: Flag[];
  checkpoints: Checkpoint[];
}

export interface Page {
  next_cursor?: string | null;
}

export interface RuntimeList extends Page {
  runtimes: Runtime[];
}

/** A trace entry as the server holds it: metadata only, never prompt text. */
export type Entry = Record<string, unknown>;

export interface Decision {
  runtime_id: string;
  seq: number;
  entry_id: string;
  occurred_at: string;
  session_id: string | null;
  agent_id: string | null;
  action: string | null;
  risk: string | null;
  hash_ok: boolean;
  entry: Entry;
}

export interface DecisionList extends Page {
  decisions: Decision[];
}

export interface AuditEvent {
  runtime_id: string;
  seq: number;
  entry_id: string;
  occurred_at: string;
  event_type: string | null;
  hash_ok: boolean;
  entry: Entry;
}

export interface AuditEventList extends Page {
  events: AuditEvent[];
}

export interface Session {
  runtime_id: string;
  session_id: string;
  agent_id: string | null;
  first_at: string;
  last_at: string;
  decisions: number;
  actions: Record<string, number>;
  risks: Record<string, number>;
}

export interface SessionList extends Page {
  sessions: Session[];
}

export interface RiskHour {
  runtime_id: string;
  hour: string;
  none: number;
  low: number;
  medium: number;
  high: number;
  critical: number;
  unclassified: number;
}

export interface RiskHeatmap {
  from: string;
  to: string;
  hours: RiskHour[];
}

export interface Actor {
  kind: 'user' | 'runtime' | string;
  id: string;
}

export interface PolicySummary {
  name: string;
  description: string;
  latest_version: string | null;
  latest_content_hash: string | null;
  created_at: string;
  created_by: Actor;
  archived_at: string | null;
  archived_by: string | null;
}

export interface PolicyList extends Page {
  policies: PolicySummary[];
}

export interface PolicyVersion {
  version: string;
  content_hash: string;
  signed_at: string;
  uploaded_at: string;
  uploaded_by: Actor;
}

export interface VersionList extends Page {
  name: string;
  versions: PolicyVersion[];
}

export interface SignedVersion {
  name: string;
  version: string;
  content_hash: string;
  yaml: string;
  signed_at: string;
  signature: string;
}

export interface UploadedVersion {
  name: string;
  version: string;
  content_hash: string;
}

export interface PolicyProblem {
  line: number;
  column: number;
  field: string;
  message: string;
}

export interface Validation {
  valid: boolean;
  name: string | null;
  policy_version: string | null;
  rules: number | null;
  autonomy_mode: string | null;
  content_hash: string | null;
  errors: PolicyProblem[];
}

export interface VersionRef {
  version: string;
  content_hash: string;
  signed_at: string;
}

export interface FieldChange {
  /** Dotted path, e.g. `defaults.no_match` or `match.prompt_type`. */
  field: string;
  before: unknown;
  after: unknown;
}

export interface RuleEntry {
  id: string;
  index: number;
  rule: unknown;
}

export interface RuleChange {
  id: string;
  index_before: number;
  index_after: number;
  changes: FieldChange[];
}

export interface RuleMove {
  id: string;
  before: number;
  after: number;
}

export interface PolicyDiff {
  fields: FieldChange[];
  added: RuleEntry[];
  removed: RuleEntry[];
  changed: RuleChange[];
  moved: RuleMove[];
}

export interface VersionDiff {
  name: string;
  from: VersionRef;
  to: VersionRef;
  equal: boolean;
  diff: PolicyDiff;
}

export interface TrialEvent {
  prompt_text: string;
  prompt_type: string;
  confidence: string;
  tool_id?: string;
  repo?: string;
  session_tags?: string[];
  branch?: string;
  ci_status?: string;
}

export interface TrialAnswer {
  name: string;
  version: string;
  content_hash: string;
  autonomy_mode: string;
  policy_action: string;
  reply_value: string;
  matched_rule: string;
  action_taken: string;
  suggested_action: string | null;
  explanation: string;
  rules: Record<string, unknown>[];
  risk_level: string;
  risk_reasons: string[];
}

export interface Distribution {
  distribution_id: number;
  name: string;
  version: string;
  content_hash: string;
  target: 'all' | 'runtimes' | string;
  runtime_ids: string[];
  distributed_at: string;
  distributed_by: string;
}

export interface DistributionList extends Page {
  distributions: Distribution[];
}

export interface RegistryRef {
  name: string;
  version: string;
}

export interface RuntimePolicy {
  runtime_id: string;
  distributed: Distribution | null;
  loaded: {
    name: string;
    policy_version: string;
    policy_hash: string;
    source: string;
    loaded_at: string;
    reported_at: string;
    registry: RegistryRef[];
  } | null;
  in_sync: boolean | null;
  pins: {
    scope: string;
    id: string;
    policy_hash: string;
    reported_at: string;
    registry: RegistryRef[];
  }[];
}

export interface RuntimePolicyList extends Page {
  runtimes: RuntimePolicy[];
}

export interface ApiKey {
  key_id: string;
  label: string;
  created_at: string;
  revoked_at: string | null;
}

export interface CreatedApiKey {
  api_key: string;
  key_id: string;
  label: string;
  created_at: string;
}

/** `{kind, payload}` frames of `/v1/live`. */
export interface DecisionEvent {
  runtime_id: string;
  seq: number;
  entry_id: string;
  occurred_at: string;
  session_id: string | null;
  agent_id: string | null;
  action: string | null;
  risk: string | null;
  hash_ok: boolean;
}

export type LiveEvent =
  | { kind: 'subscribed'; payload: { org_id: string } }
  | { kind: 'decision'; payload: DecisionEvent }
  | { kind: 'runtime_status'; payload: { runtime_id: string; change: string; witness_status: string } }
  | {
      kind: 'chain_status';
      payload: {
        runtime_id: string;
        stream: string;
        status: string;
        gap_from: number | null;
        gap_to: number | null;
        broken_at: number | null;
        broken_kind: string | null;
      };
    }
  | { kind: 'resync'; payload: unknown }
  | { kind: 'policy'; payload: { change: string; name: string; version?: string; content_hash?: string } }
  | {
      kind: 'runtime_policy';
      payload: { runtime_id: string; name: string; policy_hash: string; source: string; pins: number };
    }
  | { kind: 'other'; name: string; payload: unknown };
