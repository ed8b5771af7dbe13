/**
 * kimi-nb for JupyterLab: the Kimi chat sidebar, "Ask Kimi" (context menu, cell toolbar, Accel Shift K)
 * and "Fix with Kimi" on error outputs.
 */
import {
  ILabShell,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { CodeCell } from '@jupyterlab/cells';
import { ICodeCellModel } from '@jupyterlab/cells';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStateDB } from '@jupyterlab/statedb';
import { UUID } from '@lumino/coreutils';

import { ChatSidebar } from './components/ChatPanel';
import { addFixButtons } from './fixbutton';
import { kimiIcon } from './icons';
import { showProposalsInline } from './inline';
import { connectKernelComms } from './kernelcomm';
import { ChatModel } from './model';
import {
  cellIndex,
  cellLabel,
  errorOf,
  insertCell,
  selectedText
} from './notebook';
import { DEFAULT_SETTINGS, readSettings } from './settings';

const PLUGIN_ID = 'kimi-nb:plugin';

namespace CommandIDs {
  export const ask = 'kimi-nb:ask';
  export const fixError = 'kimi-nb:fix-error';
  export const open = 'kimi-nb:open';
}

const FIX_PROMPT = 'Fix this error.';

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'Kimi chat sidebar for notebooks.',
  autoStart: true,
  requires: [INotebookTracker, IRenderMimeRegistry, IStateDB],
  optional: [ISettingRegistry, ICommandPalette, ILabShell],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    rendermime: IRenderMimeRegistry,
    state: IStateDB,
    settingRegistry: ISettingRegistry | null,
    palette: ICommandPalette | null
  ) => {
    const model = new ChatModel({
      state,
      tracker,
      settings: { ...DEFAULT_SETTINGS }
    });
    const sidebar = new ChatSidebar({
      model,
      rendermime,
      onInsertCode: code => {
        const panel = tracker.currentWidget;
        if (panel) {
          insertCell(panel, panel.content.activeCellIndex, code);
        }
      }
    });
    app.shell.add(sidebar, 'right', { rank: 900 });

    const openSidebar = () => {
      app.shell.activateById(sidebar.id);
      requestAnimationFrame(() => sidebar.focusInput());
    };

    const followActiveCell = () => {
      const panel = tracker.currentWidget;
      const cell = tracker.activeCell;
      if (panel && cell) {
        model.setActiveCell(cell.model.id, cellLabel(panel, cell.model.id));
      } else {
        model.setActiveCell(null, '');
      }
    };
    const followNotebook = async () => {
      await model.setPath(tracker.currentWidget?.context.path ?? '');
      followActiveCell();
    };
    tracker.currentChanged.connect(() => void followNotebook());
    tracker.activeCellChanged.connect(followActiveCell);
    tracker.widgetAdded.connect((_, panel) => {
      panel.context.pathChanged.connect(() => {
        if (panel === tracker.currentWidget) {
          void followNotebook();
        }
      });
    });

    /** Pin a cell as context (a chip the user can remove); returns its label. */
    const addCellChip = (panel: NotebookPanel, cellId: string): string => {
      const label = cellLabel(panel, cellId);
      model.addChip({
        kind: 'cell',
        id: UUID.uuid4(),
        cellId,
        label,
        auto: false
      });
      return label;
    };

    const fix = async (panel: NotebookPanel, cell: CodeCell) => {
      const cellId = cell.model.id;
      const error = errorOf(cell.model as ICodeCellModel, cellId);
      if (!error) {
        return;
      }
      app.shell.activateById(panel.id);
      panel.content.activeCellIndex = cellIndex(panel, cellId);
      app.shell.activateById(sidebar.id);
      await model.setPath(panel.context.path);
      const label = addCellChip(panel, cellId);
      model.addChip({
        kind: 'error',
        id: UUID.uuid4(),
        error,
        label: `${error.ename} in ${label}`
      });
      await model.send(FIX_PROMPT);
    };
    addFixButtons(tracker, (panel, cell) => void fix(panel, cell));
    connectKernelComms(tracker);
    showProposalsInline(model, tracker);

    app.commands.addCommand(CommandIDs.open, {
      label: 'Open Kimi Chat',
      icon: kimiIcon,
      execute: openSidebar
    });
    app.commands.addCommand(CommandIDs.ask, {
      label: 'Ask Kimi',
      caption: 'Ask Kimi about this cell',
      icon: kimiIcon,
      execute: () => {
        const panel = tracker.currentWidget;
        const cell = tracker.activeCell;
        if (panel && cell) {
          const cellId = cell.model.id;
          const label = addCellChip(panel, cellId);
          const selection = selectedText(panel);
          if (selection) {
            model.addChip({
              kind: 'selection',
              id: UUID.uuid4(),
              cellId,
              text: selection,
              label: `selection in ${label}`
            });
          }
        }
        openSidebar();
      }
    });
    app.commands.addCommand(CommandIDs.fixError, {
      label: 'Fix with Kimi',
      caption: 'Ask Kimi to fix the error of the active cell',
      icon: kimiIcon,
      isEnabled: () => {
        const cell = tracker.activeCell;
        return (
          cell instanceof CodeCell &&
          errorOf(cell.model, cell.model.id) !== null
        );
      },
      execute: () => {
        const panel = tracker.currentWidget;
        const cell = tracker.activeCell;
        if (panel && cell instanceof CodeCell) {
          return fix(panel, cell);
        }
      }
    });
    palette?.addItem({ command: CommandIDs.open, category: 'Kimi' });
    palette?.addItem({ command: CommandIDs.fixError, category: 'Kimi' });

    if (settingRegistry) {
      void settingRegistry.load(PLUGIN_ID).then(settings => {
        const apply = () => {
          model.settings = readSettings(settings);
          followActiveCell();
        };
        settings.changed.connect(apply);
        apply();
      });
    }
    void app.restored.then(() => model.refreshStatus());
  }
};

export default plugin;
