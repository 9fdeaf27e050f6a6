// The dashboard's hand-written API types (src/api/types.ts) against the server's OpenAPI
// document: every member an interface declares must be a property of the schema it stands
// for, so the dashboard never reads a field the server does not send. Members the schema has
// and the interface leaves out are reported, not refused (the dashboard may not need them).
//
// Used by the browser test with the document the real server serves, and unit tested.

import ts from 'typescript';

/**
 * Interface of types.ts -> component schema of the OpenAPI document.
 * @type {Record<string, string>}
 */
export const SCHEMA_OF = {
  User: 'UserView',
  Me: 'MeAnswer',
  LoginAnswer: 'LoginAnswer',
  Chain: 'ChainView',
  Runtime: 'RuntimeView',
  Flag: 'FlagView',
  Checkpoint: 'CheckpointView',
  RuntimeDetail: 'RuntimeDetail',
  RuntimeList: 'RuntimeList',
  Decision: 'DecisionView',
  DecisionList: 'DecisionList',
  AuditEvent: 'AuditEventView',
  AuditEventList: 'AuditEventList',
  Session: 'SessionView',
  SessionList: 'SessionList',
  RiskHour: 'RiskHourView',
  RiskHeatmap: 'RiskHeatmap',
  Actor: 'ActorView',
  PolicySummary: 'PolicySummary',
  PolicyList: 'PolicyList',
  PolicyVersion: 'VersionView',
  VersionList: 'VersionList',
  SignedVersion: 'SignedVersion',
  UploadedVersion: 'UploadedVersion',
  PolicyProblem: 'PolicyProblem',
  Validation: 'Validation',
  VersionRef: 'VersionRef',
  VersionDiff: 'VersionDiff',
  TrialAnswer: 'TrialAnswer',
  Distribution: 'DistributionView',
  DistributionList: 'DistributionList',
  RegistryRef: 'RegistryRef',
  RuntimePolicy: 'RuntimePolicyView',
  RuntimePolicyList: 'RuntimePolicyList',
  ApiKey: 'ApiKeyView',
  CreatedApiKey: 'CreatedApiKey',
};

/**
 * Interface name -> its member names (with those of the interfaces it extends).
 * @param {string} source
 * @returns {Map<string, string[]>}
 */
export function interfaceMembers(source) {
  const file = ts.createSourceFile('types.ts', source, ts.ScriptTarget.ES2022, true);
  const own = new Map();
  const parents = new Map();
  for (const statement of file.statements) {
    if (!ts.isInterfaceDeclaration(statement)) continue;
    const name = statement.name.text;
    const members = [];
    for (const member of statement.members) {
      if (ts.isPropertySignature(member) && member.name && (ts.isIdentifier(member.name) || ts.isStringLiteral(member.name))) {
        members.push(member.name.text);
      }
    }
    own.set(name, members);
    const extended = [];
    for (const clause of statement.heritageClauses ?? []) {
      for (const type of clause.types) extended.push(type.expression.getText(file));
    }
    parents.set(name, extended);
  }
  const all = new Map();
  const resolve = (name, seen = new Set()) => {
    if (seen.has(name)) return [];
    seen.add(name);
    return [...(own.get(name) ?? []), ...(parents.get(name) ?? []).flatMap((p) => resolve(p, seen))];
  };
  for (const name of own.keys()) all.set(name, [...new Set(resolve(name))]);
  return all;
}

/**
 * The properties of a component schema, following `$ref`, `allOf` (serde's flatten); `null`
 * when the document has no such schema.
 * @param {any} document
 * @param {string} name
 * @param {Set<string>} [seen]
 * @returns {Set<string> | null}
 */
export function schemaProperties(document, name, seen = new Set()) {
  if (seen.has(name)) return new Set();
  seen.add(name);
  const schema = document?.components?.schemas?.[name];
  if (!schema) return null;
  const out = new Set();
  const visit = (node) => {
    if (!node || typeof node !== 'object') return;
    if (typeof node.$ref === 'string') {
      const ref = node.$ref.replace('#/components/schemas/', '');
      for (const p of schemaProperties(document, ref, seen) ?? []) out.add(p);
      return;
    }
    for (const p of Object.keys(node.properties ?? {})) out.add(p);
    for (const part of [...(node.allOf ?? []), ...(node.oneOf ?? []), ...(node.anyOf ?? [])]) visit(part);
  };
  visit(schema);
  return out;
}

/**
 * `{errors, notes}`: an error per member the schema lacks or schema that is missing.
 * @param {string} source types.ts
 * @param {unknown} document the OpenAPI document
 * @param {Record<string, string>} [mapping] interface -> schema
 * @returns {{ errors: string[], notes: string[] }}
 */
export function compareTypes(source, document, mapping = SCHEMA_OF) {
  const interfaces = interfaceMembers(source);
  const errors = [];
  const notes = [];
  for (const [iface, schemaName] of Object.entries(mapping)) {
    const members = interfaces.get(iface);
    if (!members) {
      errors.push(`types.ts has no interface ${iface}`);
      continue;
    }
    const properties = schemaProperties(document, schemaName);
    if (!properties) {
      errors.push(`the OpenAPI document has no schema ${schemaName} (for ${iface})`);
      continue;
    }
    for (const member of members) {
      if (!properties.has(member)) errors.push(`${iface}.${member} is not a property of ${schemaName}`);
    }
    for (const property of properties) {
      if (!members.includes(property)) notes.push(`${schemaName}.${property} is not read by the dashboard (${iface})`);
    }
  }
  return { errors, notes };
}
