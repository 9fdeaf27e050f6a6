// How times and ids are shown.

/** `ed25519:AbCdEf…` → `ed25519:AbCdEf…` shortened to its first characters, for tables. */
export function shortId(id: string, keep = 12): string {
  const [scheme, rest] = id.includes(':') ? [id.slice(0, id.indexOf(':') + 1), id.slice(id.indexOf(':') + 1)] : ['', id];
  return rest.length > keep ? `${scheme}${rest.slice(0, keep)}…` : id;
}

export function shortHash(hash: string | null | undefined): string {
  if (!hash) return '—';
  return hash.length > 12 ? hash.slice(0, 12) : hash;
}

/** `2026-11-27 08:01:02 UTC`: one zone for everyone reading the same audit trail. */
export function timeText(iso: string | null | undefined): string {
  if (!iso) return '—';
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return iso;
  return new Date(t).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC').replace(/Z$/, ' UTC');
}

/** "3 min ago", for recency at a glance. */
export function ago(iso: string | null | undefined, now: number): string {
  if (!iso) return '—';
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return iso;
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

/** A `<input type="datetime-local">` value (taken as UTC) as RFC 3339, or '' when empty. */
export function localInputToIso(value: string): string {
  if (!value) return '';
  const t = Date.parse(value.length === 16 ? `${value}:00Z` : `${value}Z`);
  return Number.isNaN(t) ? '' : new Date(t).toISOString();
}

export function isoToLocalInput(iso: string): string {
  const t = Date.parse(iso);
  return Number.isNaN(t) ? '' : new Date(t).toISOString().slice(0, 16);
}
