import { describe, expect, it } from 'vitest';
import { commentStart, tokenize, tokenizeLine } from './yaml';

const POLICY = `policy_version: "1"
name: safe-default   # the name
autonomy_mode: full
rules:
  - id: yes
    match:
      prompt_type: [yes_no, confirm_enter]
      min_confidence: high
      max_risk: 3
    action: {type: auto_reply, value: "y # not a comment"}
# done
`;

describe('YAML highlighting', () => {
  it('gives every line back exactly', () => {
    for (const line of POLICY.split('\n')) expect(tokenizeLine(line).map((t) => t.text).join('')).toBe(line);
    expect(tokenize(POLICY)).toHaveLength(POLICY.split('\n').length);
  });

  it('tells keys, scalars, punctuation and comments apart', () => {
    const kinds = (line: string) => tokenizeLine(line).filter((t) => t.kind !== 'text').map((t) => `${t.kind}:${t.text}`);
    expect(kinds('name: safe-default   # the name')).toEqual(['key:name', 'punct::', 'string:safe-default', 'comment:# the name']);
    expect(kinds('  - id: yes')).toEqual(['punct:-', 'key:id', 'punct::', 'bool:yes']);
    expect(kinds('      max_risk: 3')).toEqual(['key:max_risk', 'punct::', 'number:3']);
    expect(kinds('      prompt_type: [yes_no, confirm_enter]')).toEqual([
      'key:prompt_type',
      'punct::',
      'punct:[',
      'string:yes_no',
      'punct:,',
      'string:confirm_enter',
      'punct:]',
    ]);
    expect(kinds('# done')).toEqual(['comment:# done']);
  });

  it('finds comments outside quotes only', () => {
    expect(commentStart('value: "y # no"')).toBe(-1);
    expect(commentStart("value: 'a#b' # yes")).toBe(13);
    expect(commentStart('url: http://x/#frag')).toBe(-1);
  });
});
