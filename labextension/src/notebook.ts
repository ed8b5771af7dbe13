/**
 * Reading context from and applying accepted proposals to an open notebook, through its shared model,
 * so that every change is one undoable step of the notebook's own history. Nothing is ever executed.
 */
import { ISharedCodeCell } from '@jupyter/ydoc';
import { ICodeCellModel } from '@jupyterlab/cells';
import { IError, IOutput } from '@jupyterlab/nbformat';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';

import { IErrorContext, IProposal } from './request';

/** The open notebook panel of `path`, if any. */
export function findPanel(
  tracker: INotebookTracker,
  path: string
): NotebookPanel | null {
  return tracker.find(panel => panel.context.path === path) ?? null;
}

/** Index of the cell with nbformat id `cellId`, or -1. */
export function cellIndex(panel: NotebookPanel, cellId: string): number {
  const cells = panel.content.model?.sharedModel.cells ?? [];
  return cells.findIndex(cell => cell.id === cellId);
}

/** The first error output of a code cell model, as sent with "Fix with Kimi". */
export function errorOf(
  model: ICodeCellModel,
  cellId: string
): IErrorContext | null {
  for (let i = 0; i < model.outputs.length; i++) {
    const output = model.outputs.get(i).toJSON() as IOutput;
    if (output.output_type === 'error') {
      const error = output as IError;
      return {
        cell_id: cellId,
        ename: error.ename,
        evalue: error.evalue,
        traceback: error.traceback
      };
    }
  }
  return null;
}

/** The text selected in the active cell's editor ("" when none). */
export function selectedText(panel: NotebookPanel): string {
  const editor = panel.content.activeCell?.editor;
  if (!editor) {
    return '';
  }
  const { start, end } = editor.getSelection();
  const from = editor.getOffsetAt(start);
  const to = editor.getOffsetAt(end);
  return editor.model.sharedModel
    .getSource()
    .slice(Math.min(from, to), Math.max(from, to));
}

/** The execution-count label of a cell for chips ("[3]", "cell 2" when never run). */
export function cellLabel(panel: NotebookPanel, cellId: string): string {
  const index = cellIndex(panel, cellId);
  const cell = panel.content.model?.sharedModel.cells[index];
  if (!cell) {
    return 'cell';
  }
  const count =
    cell.cell_type === 'code'
      ? (cell as ISharedCodeCell).execution_count
      : null;
  return count ? `cell [${count}]` : `cell ${index + 1}`;
}

/** Make the cell at `index` the active one and scroll it into view. */
export function showCell(panel: NotebookPanel, index: number): void {
  if (index < 0) {
    return;
  }
  const notebook = panel.content;
  notebook.activeCellIndex = index;
  void notebook.scrollToItem(index, 'smart');
}

/** Insert a new cell after `afterIndex` (-1: at the top) as one undoable step; returns its index. */
export function insertCell(
  panel: NotebookPanel,
  afterIndex: number,
  source: string,
  cellType = 'code',
  id?: string
): number {
  const shared = panel.content.model!.sharedModel;
  const index = afterIndex + 1;
  const taken = id !== undefined && shared.cells.some(cell => cell.id === id);
  shared.transact(() => {
    shared.insertCell(index, {
      cell_type: cellType as 'code' | 'markdown' | 'raw',
      source,
      ...(id !== undefined && !taken ? { id } : {})
    });
  });
  showCell(panel, index);
  return index;
}

function sameSource(a: string, b: string): boolean {
  return a.trimEnd() === b.trimEnd();
}

/**
 * Apply an accepted proposal to the notebook. Returns null when applied, else a one-line reason
 * (the notebook is then unchanged).
 */
export function applyProposal(
  panel: NotebookPanel,
  proposal: IProposal
): string | null {
  const model = panel.content.model;
  if (!model) {
    return 'The notebook is not open.';
  }
  const shared = model.sharedModel;
  if (proposal.kind === 'insert') {
    const after = proposal.after_cell_id
      ? cellIndex(panel, proposal.after_cell_id)
      : -1;
    if (proposal.after_cell_id && after < 0) {
      return 'The cell to insert after no longer exists.';
    }
    insertCell(
      panel,
      after,
      proposal.after,
      proposal.cell_type,
      proposal.cell_id
    );
    return null;
  }
  const index = cellIndex(panel, proposal.cell_id);
  if (index < 0) {
    return 'The cell no longer exists.';
  }
  const cell = shared.cells[index];
  if (!sameSource(cell.getSource(), proposal.before)) {
    return 'The cell changed since Kimi proposed this; ask again.';
  }
  if (proposal.kind === 'delete') {
    shared.transact(() => shared.deleteCell(index));
    showCell(panel, Math.max(0, Math.min(index, shared.cells.length - 1)));
    return null;
  }
  cell.transact(() => cell.setSource(proposal.after));
  showCell(panel, index);
  return null;
}
