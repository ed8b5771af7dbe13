/**
 * An answer rendered with JupyterLab's own markdown renderer (created on first use), re-rendered at most
 * every few frames while it streams, with Copy / Insert as cell on every code block.
 */
import { Clipboard } from '@jupyterlab/apputils';
import { IRenderMimeRegistry, MimeModel } from '@jupyterlab/rendermime';
import { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { Widget } from '@lumino/widgets';
import React, { useEffect, useRef } from 'react';

const STREAM_RENDER_DELAY_MS = 120;

export interface IMarkdownProps {
  text: string;
  streaming: boolean;
  rendermime: IRenderMimeRegistry;
  onInsertCode: (code: string) => void;
}

function codeButton(
  label: string,
  aria: string,
  className: string,
  onClick: () => void
): HTMLButtonElement {
  const button = document.createElement('button');
  button.type = 'button';
  button.className = `kimi-code-button ${className}`;
  button.textContent = label;
  button.setAttribute('aria-label', aria);
  button.addEventListener('click', onClick);
  return button;
}

function addCodeActions(
  node: HTMLElement,
  onInsertCode: (code: string) => void
): void {
  node.querySelectorAll('pre').forEach(pre => {
    if (pre.parentElement?.classList.contains('kimi-code')) {
      return;
    }
    const code = () => (pre.textContent ?? '').replace(/\n$/, '');
    const wrapper = document.createElement('div');
    wrapper.className = 'kimi-code';
    const actions = document.createElement('div');
    actions.className = 'kimi-code-actions';
    actions.append(
      codeButton('Copy', 'Copy code', 'kimi-copy-code', () =>
        Clipboard.copyToSystem(code())
      ),
      codeButton(
        'Insert as cell',
        'Insert code as a new cell',
        'kimi-insert-code',
        () => onInsertCode(code())
      )
    );
    pre.replaceWith(wrapper);
    wrapper.append(actions, pre);
  });
}

/** Markdown of an assistant message. */
export function Markdown(props: IMarkdownProps): JSX.Element {
  const host = useRef<HTMLDivElement>(null);
  const renderer = useRef<IRenderMime.IRenderer | null>(null);
  const latest = useRef(props);
  latest.current = props;
  const busy = useRef(false);
  const dirty = useRef(false);
  const timer = useRef<number | null>(null);

  useEffect(() => {
    return () => {
      if (timer.current !== null) {
        window.clearTimeout(timer.current);
      }
      renderer.current?.dispose();
      renderer.current = null;
    };
  }, []);

  useEffect(() => {
    const render = async () => {
      if (busy.current) {
        dirty.current = true;
        return;
      }
      busy.current = true;
      do {
        dirty.current = false;
        const { text, rendermime, onInsertCode } = latest.current;
        if (!host.current) {
          break;
        }
        if (!renderer.current) {
          renderer.current = rendermime.createRenderer('text/markdown');
          Widget.attach(renderer.current, host.current);
        }
        host.current.style.minHeight = `${host.current.offsetHeight}px`;
        await renderer.current.renderModel(
          new MimeModel({ data: { 'text/markdown': text }, trusted: false })
        );
        addCodeActions(renderer.current.node, onInsertCode);
        if (host.current) {
          host.current.style.minHeight = '';
        }
      } while (dirty.current);
      busy.current = false;
    };
    if (timer.current !== null && props.streaming) {
      return; // throttled: the pending render picks up the latest text
    }
    if (timer.current !== null) {
      window.clearTimeout(timer.current);
    }
    timer.current = window.setTimeout(
      () => {
        timer.current = null;
        void render();
      },
      props.streaming ? STREAM_RENDER_DELAY_MS : 0
    );
  }, [props.text, props.streaming]);

  return <div className="kimi-markdown" ref={host} />;
}
