/**
 * A proposal card: a preview (insert), a diff (edit / replace) or a confirmation (delete), with Accept and
 * Reject. Nothing changes in the notebook until Accept.
 */
import React from 'react';

import { IProposalItem } from '../model';
import { DiffView } from './DiffView';

export interface IProposalProps {
  item: IProposalItem;
  diffMode: 'side-by-side' | 'unified';
  onAccept: () => void;
  onReject: () => void;
  /** Show the cell in the notebook (the sidebar card has it; the inline one is already there). */
  onShow?: () => void;
}

const VERBS = {
  insert: 'Insert a new cell',
  edit: 'Edit',
  replace: 'Replace',
  delete: 'Delete'
};

const STATES = {
  pending: '',
  accepted: 'Accepted',
  rejected: 'Rejected',
  failed: 'Not applied'
};

/** One proposal with its actions. */
export function ProposalCard(props: IProposalProps): JSX.Element {
  const { proposal, state, note } = props.item;
  const target =
    props.item.target ?? (proposal.kind === 'insert' ? '' : 'a cell');
  const title = `${VERBS[proposal.kind] ?? proposal.kind} ${target}`.trim();
  return (
    <section
      className={`kimi-proposal kimi-proposal-${proposal.kind} kimi-proposal-${state}`}
      data-testid="kimi-proposal"
      data-kind={proposal.kind}
      data-state={state}
      aria-label={title}
    >
      <header className="kimi-proposal-header">
        <span className="kimi-proposal-title">{title}</span>
        {proposal.kind === 'insert' && proposal.cell_type !== 'code' && (
          <span className="kimi-proposal-type">{proposal.cell_type}</span>
        )}
        {state !== 'pending' && (
          <span className="kimi-proposal-state">{STATES[state]}</span>
        )}
        {props.onShow && (
          <button
            type="button"
            className="kimi-code-button kimi-show-cell"
            aria-label={`Show the cell: ${title}`}
            onClick={props.onShow}
          >
            Show
          </button>
        )}
      </header>
      {proposal.kind === 'insert' && (
        <pre className="kimi-proposal-preview">{proposal.after}</pre>
      )}
      {(proposal.kind === 'edit' || proposal.kind === 'replace') &&
        state === 'pending' && (
          <DiffView
            before={proposal.before}
            after={proposal.after}
            mode={props.diffMode}
          />
        )}
      {proposal.kind === 'delete' && (
        <>
          <p className="kimi-proposal-question">Delete this cell?</p>
          <pre className="kimi-proposal-preview">{proposal.before}</pre>
        </>
      )}
      {note && (
        <p className="kimi-proposal-note" role="status">
          {note}
        </p>
      )}
      {state === 'pending' && (
        <div className="kimi-proposal-actions">
          <button
            type="button"
            className="jp-Button jp-mod-styled jp-mod-accept kimi-accept"
            aria-label={`Accept: ${title}`}
            onClick={props.onAccept}
          >
            {proposal.kind === 'delete' ? 'Delete' : 'Accept'}
          </button>
          <button
            type="button"
            className="jp-Button jp-mod-styled jp-mod-reject kimi-reject"
            aria-label={`Reject: ${title}`}
            onClick={props.onReject}
          >
            Reject
          </button>
        </div>
      )}
    </section>
  );
}
