/**
 * A read-only CodeMirror merge view of a proposed edit, side by side or unified. `@codemirror/merge` is
 * loaded on first use, so it costs nothing until a diff is shown.
 */
import { EditorState, Extension } from '@codemirror/state';
import { EditorView } from '@codemirror/view';
import React, { useEffect, useRef, useState } from 'react';

export interface IDiffViewProps {
  before: string;
  after: string;
  mode: 'side-by-side' | 'unified';
}

const readOnly: Extension = [
  EditorState.readOnly.of(true),
  EditorView.editable.of(false),
  EditorView.lineWrapping
];

/** The diff of one proposal. */
export function DiffView(props: IDiffViewProps): JSX.Element {
  const host = useRef<HTMLDivElement>(null);
  const { before, after, mode } = props;
  const [loaded, setLoaded] = useState(false);

  useEffect(() => {
    let view: { destroy(): void } | null = null;
    let cancelled = false;
    void import('@codemirror/merge').then(({ MergeView, unifiedMergeView }) => {
      const parent = host.current;
      if (cancelled || !parent) {
        return;
      }
      view =
        mode === 'unified'
          ? new EditorView({
              parent,
              doc: after,
              extensions: [
                readOnly,
                unifiedMergeView({
                  original: before,
                  mergeControls: false,
                  syntaxHighlightDeletions: false
                })
              ]
            })
          : new MergeView({
              parent,
              a: { doc: before, extensions: readOnly },
              b: { doc: after, extensions: readOnly },
              gutter: true
            });
      setLoaded(true);
    });
    return () => {
      cancelled = true;
      view?.destroy();
    };
  }, [before, after, mode]);

  return (
    <div
      className={`kimi-diff kimi-diff-${mode}`}
      data-testid="kimi-diff"
      data-loaded={loaded}
      aria-label={`Proposed change, ${mode} diff`}
    >
      <div className="kimi-diff-editor" ref={host} />
      {!loaded && <pre className="kimi-diff-fallback">{after}</pre>}
    </div>
  );
}
