/**
 * The sidebar: engine status, the conversation of the current notebook, and the composer.
 */
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import {
  ReactWidget,
  deleteIcon,
  listIcon,
  refreshIcon
} from '@jupyterlab/ui-components';
import React, { useEffect, useLayoutEffect, useRef, useState } from 'react';

import { kimiIcon } from '../icons';
import { ChatModel } from '../model';
import { Composer } from './Composer';
import { Memories } from './Memories';
import { Message } from './Message';

export interface IChatPanelProps {
  model: ChatModel;
  rendermime: IRenderMimeRegistry;
  onInsertCode: (code: string) => void;
}

function useModel(model: ChatModel): number {
  const [version, setVersion] = useState(0);
  useEffect(() => {
    const changed = () => setVersion(v => v + 1);
    model.changed.connect(changed);
    return () => {
      model.changed.disconnect(changed);
    };
  }, [model]);
  return version;
}

function StatusBar(props: {
  model: ChatModel;
  onMemories: () => void;
}): JSX.Element {
  const { model } = props;
  const status = model.status;
  const state = model.problem ? 'problem' : status ? 'ok' : 'unknown';
  const name = status
    ? `${status.model}${status.offline ? ' (offline scripted engine)' : ''}`
    : '…';
  return (
    <header className="kimi-header">
      <kimiIcon.react tag="span" className="kimi-header-icon" />
      <span className="kimi-title">Kimi</span>
      <span
        className={`kimi-status kimi-status-${state}`}
        data-testid="kimi-status"
        title={status?.engine ?? model.problem ?? ''}
      >
        <span className="kimi-status-dot" aria-hidden="true" />
        <span className="kimi-model-name">{name}</span>
      </span>
      <button
        type="button"
        className="kimi-icon-button kimi-refresh"
        aria-label="Check the engine again"
        title="Check the engine again"
        onClick={() => void model.refreshStatus()}
      >
        <refreshIcon.react tag="span" />
      </button>
      <button
        type="button"
        className="kimi-icon-button kimi-show-memories"
        aria-label="What Kimi remembers"
        title="What Kimi remembers"
        onClick={props.onMemories}
      >
        <listIcon.react tag="span" />
      </button>
      <button
        type="button"
        className="kimi-icon-button kimi-clear"
        aria-label="Clear this notebook's conversation"
        title="Clear this notebook's conversation"
        disabled={model.turns.length === 0}
        onClick={() => void model.clear()}
      >
        <deleteIcon.react tag="span" />
      </button>
    </header>
  );
}

function ChatView(props: IChatPanelProps): JSX.Element {
  const { model } = props;
  const version = useModel(model);
  const list = useRef<HTMLDivElement>(null);
  const pinned = useRef(true);
  const [memories, setMemories] = useState(false);

  useLayoutEffect(() => {
    if (pinned.current && list.current) {
      list.current.scrollTop = list.current.scrollHeight;
    }
  }, [version]);

  return (
    <div className="kimi-panel-body">
      <StatusBar model={model} onMemories={() => setMemories(!memories)} />
      {memories && <Memories onClose={() => setMemories(false)} />}
      {model.problem && (
        <div className="kimi-problem" data-testid="kimi-problem" role="alert">
          {model.problem}
        </div>
      )}
      <div
        className="kimi-messages"
        ref={list}
        role="log"
        aria-live="polite"
        aria-label="Conversation with Kimi"
        onScroll={() => {
          const el = list.current!;
          pinned.current =
            el.scrollHeight - el.scrollTop - el.clientHeight < 48;
        }}
      >
        {model.turns.length === 0 && (
          <div className="kimi-empty">
            <p>
              {model.path
                ? `Ask about ${model.path}.`
                : 'Open a notebook to chat about it.'}
            </p>
            <p>
              Kimi proposes changes; you review and accept them. Nothing runs
              unless you run it. Shortcut: Ctrl/Cmd+Shift+K with a cell
              selected.
            </p>
          </div>
        )}
        {model.turns.map(turn => (
          <Message
            key={turn.id}
            turn={turn}
            settings={model.settings}
            rendermime={props.rendermime}
            onInsertCode={props.onInsertCode}
            onAccept={callId => void model.accept(turn.id, callId)}
            onReject={callId => void model.reject(turn.id, callId)}
            onShow={item => model.show(item)}
            onAcceptAll={() => void model.acceptAll(turn.id)}
          />
        ))}
      </div>
      <Composer
        chips={model.chips}
        streaming={model.streaming}
        onSend={prompt => {
          pinned.current = true;
          void model.send(prompt);
        }}
        onStop={() => model.stop()}
        onRemoveChip={id => model.removeChip(id)}
        onImage={chip => model.addChip(chip)}
      />
    </div>
  );
}

/** The right-sidebar widget. */
export class ChatSidebar extends ReactWidget {
  constructor(private readonly _props: IChatPanelProps) {
    super();
    this.id = 'kimi-nb-sidebar';
    this.addClass('kimi-sidebar');
    this.title.icon = kimiIcon;
    this.title.caption = 'Kimi';
  }

  /** Put the keyboard focus in the prompt box. */
  focusInput(): void {
    this.node.querySelector<HTMLTextAreaElement>('.kimi-chat-input')?.focus();
  }

  protected render(): JSX.Element {
    return <ChatView {...this._props} />;
  }
}
