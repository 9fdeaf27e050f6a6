import { useMemo, useRef, type KeyboardEvent, type UIEvent } from 'react';
import type { PolicyProblem } from './api/types';
import { problemsByLine } from './lib/editor';
import { tokenize } from './lib/yaml';

/**
 * A YAML editor: a plain `<textarea>` (so typing, selection, undo, screen readers and mobile
 * keyboards behave as everywhere) over a highlighted copy of its text, with a gutter that
 * marks every line a problem is reported on.
 */
export function YamlEditor(props: {
  id: string;
  label: string;
  value: string;
  onChange: (value: string) => void;
  problems: readonly PolicyProblem[];
  readOnly?: boolean;
  textareaRef?: React.RefObject<HTMLTextAreaElement | null>;
}) {
  const { value, problems } = props;
  const lines = useMemo(() => tokenize(value), [value]);
  const byLine = useMemo(() => problemsByLine(problems), [problems]);
  const layer = useRef<HTMLDivElement>(null);
  const ownRef = useRef<HTMLTextAreaElement>(null);
  const ref = props.textareaRef ?? ownRef;

  const onScroll = (e: UIEvent<HTMLTextAreaElement>) => {
    const el = layer.current;
    if (el) el.style.transform = `translate(${-e.currentTarget.scrollLeft}px, ${-e.currentTarget.scrollTop}px)`;
  };

  // Tab indents (two spaces) instead of leaving the field; Escape then Tab leaves it.
  const onKeyDown = (e: KeyboardEvent<HTMLTextAreaElement>) => {
    if (e.key !== 'Tab' || e.shiftKey || e.ctrlKey || e.altKey || e.metaKey) return;
    const el = e.currentTarget;
    if (el.dataset.escaped === '1') {
      el.dataset.escaped = '';
      return;
    }
    e.preventDefault();
    const { selectionStart: start, selectionEnd: end } = el;
    const next = el.value.slice(0, start) + '  ' + el.value.slice(end);
    props.onChange(next);
    requestAnimationFrame(() => {
      el.selectionStart = el.selectionEnd = start + 2;
    });
  };

  const described = [`${props.id}-keys`, problems.length ? `${props.id}-problems` : ''].filter(Boolean).join(' ');
  return (
    <>
    <p className="muted editor-keys" id={`${props.id}-keys`}>
      Tab indents; Esc then Tab leaves the editor.
    </p>
    <div className="editor">
      <div className="editor-layer" ref={layer} aria-hidden="true">
        <div className="editor-gutter">
          {lines.map((_, i) => {
            const here = byLine.get(i + 1);
            return (
              <div
                key={i}
                className={here ? 'gutter-line line-error' : 'gutter-line'}
                data-line={i + 1}
                data-error={here ? 'true' : undefined}
                title={here?.map((p) => p.message).join('\n')}
              >
                {here ? '●' : ''}
                {i + 1}
              </div>
            );
          })}
        </div>
        <pre className="editor-code">
          {lines.map((tokens, i) => (
            <div key={i} className={byLine.has(i + 1) ? 'code-line code-line-error' : 'code-line'}>
              {tokens.map((t, j) => (
                <span key={j} className={`tok-${t.kind}`}>
                  {t.text}
                </span>
              ))}
              {'\n'}
            </div>
          ))}
        </pre>
      </div>
      <label htmlFor={props.id} className="sr-only">
        {props.label}
      </label>
      <textarea
        id={props.id}
        ref={ref}
        className="editor-input"
        value={value}
        spellCheck={false}
        autoCapitalize="off"
        autoComplete="off"
        autoCorrect="off"
        wrap="off"
        readOnly={props.readOnly}
        aria-invalid={problems.length > 0}
        aria-describedby={described}
        onChange={(e) => props.onChange(e.target.value)}
        onScroll={onScroll}
        onKeyDown={onKeyDown}
        onKeyUp={(e) => {
          if (e.key === 'Escape') e.currentTarget.dataset.escaped = '1';
        }}
      />
    </div>
    </>
  );
}
