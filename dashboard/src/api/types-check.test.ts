import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { compareTypes, interfaceMembers, schemaProperties, SCHEMA_OF } from '../../e2e/api-types.mjs';

const source = readFileSync(new URL('./types.ts', import.meta.url), 'utf8');

describe("the API types' check against the OpenAPI document", () => {
  it('reads interfaces with what they extend', () => {
    const members = interfaceMembers('interface Page { next_cursor?: string }\ninterface L extends Page { rows: number[]; "x-y": string }');
    expect(members.get('L')).toEqual(['rows', 'x-y', 'next_cursor']);
  });

  it('follows $ref and allOf, as utoipa writes serde flatten', () => {
    const doc = {
      components: {
        schemas: {
          A: { type: 'object', properties: { a: {} } },
          B: { allOf: [{ $ref: '#/components/schemas/A' }, { type: 'object', properties: { b: {} } }] },
        },
      },
    };
    expect([...(schemaProperties(doc, 'B') ?? [])].sort()).toEqual(['a', 'b']);
    expect(schemaProperties(doc, 'C')).toBeNull();
  });

  it('refuses a member the server does not send, and a schema that is gone', () => {
    const doc = { components: { schemas: { FlagView: { properties: { kind: {}, detail: {} } } } } };
    const { errors, notes } = compareTypes(source, doc, { Flag: 'FlagView', Chain: 'ChainView' });
    expect(errors).toEqual(['Flag.flagged_at is not a property of FlagView', 'the OpenAPI document has no schema ChainView (for Chain)']);
    expect(notes).toEqual([]);
  });

  it('maps only interfaces types.ts has', () => {
    const names = interfaceMembers(source);
    for (const iface of Object.keys(SCHEMA_OF)) expect(names.has(iface), iface).toBe(true);
  });
});
