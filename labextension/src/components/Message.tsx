/**
 * One turn of the conversation: the user's prompt with its context, or the assistant's streamed answer with
 * folded reasoning, the tools it used, its proposals and its token usage.
 */
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import React from 'react';

import { IProposalItem, ITurn } from '../model';
import { IKimiSettings, costOf } from '../settings';
import { Markdown } from './Markdown';
import { ProposalCard } from './Proposal';

export interface IMessageProps {
  turn: ITurn;
  settings: IKimiSettings;
  rendermime: IRenderMimeRegistry;
  onInsertCode: (code: string) => void;
  onAccept: (callId: string) => void;
  onReject: (callId: string) => void;
  onShow: (item: IProposalItem) => void;
  onAcceptAll: () => void;
}

function UsageLine(props: {
  turn: ITurn;
  settings: IKimiSettings;
}): JSX.Element | null {
  const usage = props.turn.usage;
  if (!usage) {
    return null;
  }
  const cost = costOf(usage, props.settings);
  const cached = usage.cached_tokens
    ? `, ${usage.cached_tokens.toLocaleString()} cached`
    : '';
  return (
    <div className="kimi-usage" data-testid="kimi-usage">
      {usage.prompt_tokens.toLocaleString()} in{cached} ·{' '}
      {usage.completion_tokens.toLocaleString()} out · ≈ $
      {cost < 0.01 ? cost.toFixed(4) : cost.toFixed(2)}
    </div>
  );
}

function UserMessage(props: { turn: ITurn }): JSX.Element {
  return (
    <div
      className="kimi-message kimi-message-user"
      data-testid="kimi-message-user"
    >
      {props.turn.context.length > 0 && (
        <div className="kimi-message-context" aria-label="Context sent">
          {props.turn.context.map((label, i) => (
            <span key={i} className="kimi-context-label">
              {label}
            </span>
          ))}
        </div>
      )}
      <div className="kimi-message-text">{props.turn.text}</div>
    </div>
  );
}

function AssistantMessage(props: IMessageProps): JSX.Element {
  const { turn, settings } = props;
  const pending = turn.proposals.filter(item => item.state === 'pending');
  const waiting =
    turn.streaming && !turn.text && !turn.reasoning && turn.tools.length === 0;
  return (
    <div
      className="kimi-message kimi-message-assistant"
      data-testid="kimi-message-assistant"
      data-streaming={turn.streaming}
      aria-busy={turn.streaming}
    >
      {turn.reasoning && (
        <details className="kimi-reasoning" open={settings.showReasoning}>
          <summary>
            {turn.streaming && !turn.text ? 'Thinking…' : 'Reasoning'}
          </summary>
          <div className="kimi-reasoning-text">{turn.reasoning}</div>
        </details>
      )}
      {turn.tools.length > 0 && (
        <ul className="kimi-tools" aria-label="Tools used">
          {turn.tools.map(tool => (
            <li
              key={tool.id}
              className={`kimi-tool${tool.isError ? ' kimi-tool-error' : ''}${tool.done ? '' : ' kimi-tool-running'}`}
            >
              {tool.name}
            </li>
          ))}
        </ul>
      )}
      {waiting && <div className="kimi-waiting">Kimi is thinking…</div>}
      {turn.text && (
        <Markdown
          text={turn.text}
          streaming={turn.streaming}
          rendermime={props.rendermime}
          onInsertCode={props.onInsertCode}
        />
      )}
      {turn.notices.map((notice, i) => (
        <p key={i} className="kimi-notice" role="status">
          {notice}
        </p>
      ))}
      {turn.proposals.map(item => (
        <ProposalCard
          key={item.proposal.call_id}
          item={item}
          diffMode={settings.diffView}
          onAccept={() => props.onAccept(item.proposal.call_id)}
          onReject={() => props.onReject(item.proposal.call_id)}
          onShow={() => props.onShow(item)}
        />
      ))}
      {pending.length > 1 && !turn.streaming && (
        <button
          type="button"
          className="jp-Button jp-mod-styled jp-mod-accept kimi-accept-all"
          aria-label={`Accept all ${pending.length} proposals`}
          onClick={props.onAcceptAll}
        >
          Accept all ({pending.length})
        </button>
      )}
      {turn.stopped && (
        <p className="kimi-stopped">
          Stopped ({turn.stopped.replace('_', ' ')}).
        </p>
      )}
      {turn.error && (
        <p className="kimi-error" role="alert">
          {turn.error}
        </p>
      )}
      <UsageLine turn={turn} settings={settings} />
    </div>
  );
}

/** A user or assistant message. */
export function Message(props: IMessageProps): JSX.Element {
  return props.turn.role === 'user' ? (
    <UserMessage turn={props.turn} />
  ) : (
    <AssistantMessage {...props} />
  );
}
