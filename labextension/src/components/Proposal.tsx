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
}

const TITLES = {
  insert: 'Insert a new cell',
  edit: 'Edit a cell',
  replace: 'Replace a cell',
  delete: 'Delete a cell'
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
  const title = TITLES[proposal.kind] ?? proposal.kind;
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
