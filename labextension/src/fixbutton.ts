/**
 * A "Fix with Kimi" button on every code cell whose outputs contain an error, kept in sync as outputs change.
 */
import { CodeCell } from '@jupyterlab/cells';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { Panel, Widget } from '@lumino/widgets';

const HAS_ERROR_CLASS = 'kimi-has-error';

class FixButton extends Widget {
  constructor(onClick: () => void) {
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'jp-Button jp-mod-styled kimi-fix-error';
    button.dataset.testid = 'kimi-fix-error';
    button.textContent = 'Fix with Kimi';
    button.setAttribute('aria-label', 'Fix this error with Kimi');
    button.addEventListener('click', event => {
      event.stopPropagation();
      onClick();
    });
    super({ node: button });
  }
}

function hasError(cell: CodeCell): boolean {
  const outputs = cell.model.outputs;
  for (let i = 0; i < outputs.length; i++) {
    if (outputs.get(i).type === 'error') {
      return true;
    }
  }
  return false;
}

/**
 * Watch every notebook of `tracker`; `onFix` gets the panel and the cell whose button was clicked.
 */
export function addFixButtons(
  tracker: INotebookTracker,
  onFix: (panel: NotebookPanel, cell: CodeCell) => void
): void {
  const buttons = new WeakMap<CodeCell, FixButton>();
  const watched = new WeakSet<CodeCell>();

  const update = (panel: NotebookPanel, cell: CodeCell) => {
    if (cell.isDisposed || !cell.outputArea) {
      return;
    }
    const wrapper = cell.outputArea.parent as Panel | null;
    const existing = buttons.get(cell);
    if (hasError(cell) && wrapper) {
      if (!existing || existing.isDisposed) {
        const button = new FixButton(() => onFix(panel, cell));
        buttons.set(cell, button);
        wrapper.addWidget(button);
        wrapper.addClass(HAS_ERROR_CLASS);
      }
    } else if (existing) {
      existing.dispose();
      buttons.delete(cell);
      wrapper?.removeClass(HAS_ERROR_CLASS);
    }
  };

  const watch = (panel: NotebookPanel) => {
    for (const cell of panel.content.widgets) {
      if (cell instanceof CodeCell && !watched.has(cell)) {
        watched.add(cell);
        cell.model.outputs.changed.connect(() => update(panel, cell));
        void cell.ready.then(() => update(panel, cell));
      }
    }
  };

  tracker.widgetAdded.connect((_, panel) => {
    void panel.context.ready.then(() => {
      watch(panel);
      panel.content.model?.cells.changed.connect(() =>
        requestAnimationFrame(() => watch(panel))
      );
    });
  });
}
