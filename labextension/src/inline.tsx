/**
 * Pending edit / replace proposals shown in the notebook itself: the diff and Accept / Reject right below the
 * cell they change, mirroring the card in the sidebar. Removed as soon as the proposal is settled.
 */
import { Cell } from '@jupyterlab/cells';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { ReactWidget } from '@jupyterlab/ui-components';
import { PanelLayout, Widget } from '@lumino/widgets';
import React from 'react';

import { ProposalCard } from './components/Proposal';
import { ChatModel, IProposalItem } from './model';
import { findPanel } from './notebook';

interface IShown {
  widget: Widget;
  panel: NotebookPanel;
}

function addBelowInput(cell: Cell, widget: Widget): void {
  const layout = cell.layout as PanelLayout;
  const input = layout.widgets.findIndex(child =>
    child.hasClass('jp-Cell-inputWrapper')
  );
  layout.insertWidget(input + 1, widget);
}

/** Keep the notebook's inline proposals in sync with the chat model. */
export function showProposalsInline(
  model: ChatModel,
  tracker: INotebookTracker
): void {
  const shown = new Map<string, IShown>();

  const sync = () => {
    const panel = findPanel(tracker, model.path);
    const wanted = new Map<string, { turnId: string; item: IProposalItem }>();
    for (const turn of model.turns) {
      for (const item of turn.proposals) {
        const kind = item.proposal.kind;
        if (
          item.state === 'pending' &&
          (kind === 'edit' || kind === 'replace')
        ) {
          wanted.set(item.proposal.call_id, { turnId: turn.id, item });
        }
      }
    }
    for (const [callId, entry] of shown) {
      if (!wanted.has(callId) || entry.panel !== panel) {
        entry.widget.dispose();
        shown.delete(callId);
      }
    }
    if (!panel) {
      return;
    }
    for (const [callId, { turnId, item }] of wanted) {
      const cell = panel.content.widgets.find(
        child => child.model.id === item.proposal.cell_id
      );
      if (shown.has(callId) || !cell) {
        continue;
      }
      const widget = ReactWidget.create(
        <ProposalCard
          item={item}
          diffMode={model.settings.diffView}
          onAccept={() => void model.accept(turnId, callId)}
          onReject={() => void model.reject(turnId, callId)}
        />
      );
      widget.addClass('kimi-inline-proposal');
      shown.set(callId, { widget, panel });
      void cell.ready.then(() => {
        if (!widget.isDisposed) {
          addBelowInput(cell, widget);
        }
      });
    }
  };
  model.changed.connect(sync);
}
