/**
 * The lab side of the `kimi_nb` kernel comm: after `%load_ext kimi_nb`, the %%kimi magics insert or replace
 * cells of the notebook they run in (never executed; undoable like any edit).
 */
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { Kernel, KernelMessage } from '@jupyterlab/services';

import { cellIndex, insertCell } from './notebook';

const TARGET = 'kimi_nb';

type KernelRequest =
  | {
      type: 'insert_cell';
      source: string;
      cell_type: string;
      after_cell_id: string | null;
    }
  | { type: 'replace_cell'; cell_id: string; source: string };

function apply(panel: NotebookPanel, request: KernelRequest): void {
  if (request.type === 'insert_cell') {
    const after = request.after_cell_id
      ? cellIndex(panel, request.after_cell_id)
      : panel.content.activeCellIndex;
    insertCell(panel, after, request.source, request.cell_type);
  } else if (request.type === 'replace_cell') {
    const index = cellIndex(panel, request.cell_id);
    const cell = panel.content.model?.sharedModel.cells[index];
    cell?.setSource(request.source);
  }
}

/** Keep one `kimi_nb` comm open per notebook kernel once the kernel accepts it. */
function connect(panel: NotebookPanel): void {
  let comm: Kernel.IComm | null = null;
  let kernel: Kernel.IKernelConnection | null = null;

  const open = () => {
    if (!kernel || kernel.isDisposed || (comm && !comm.isDisposed)) {
      return;
    }
    const opened = kernel.createComm(TARGET);
    comm = opened;
    opened.onMsg = msg =>
      apply(panel, msg.content.data as unknown as KernelRequest);
    opened.onClose = () => {
      if (comm === opened) {
        comm = null; // the kernel has no kimi_nb yet: retry after its next execution
      }
    };
    opened.open({ version: 1 });
  };
  // Retry after a cell that mentions kimi ran (e.g. `%load_ext kimi_nb`), not after every execution: a kernel
  // without the target logs each refused comm.
  let retry = false;
  const onMessage = (
    _: Kernel.IKernelConnection,
    args: Kernel.IAnyMessageArgs
  ) => {
    const msg = args.msg as KernelMessage.IMessage;
    if (args.direction !== 'recv') {
      return;
    }
    if (
      KernelMessage.isExecuteInputMsg(msg) &&
      msg.content.code.includes('kimi')
    ) {
      retry = true;
    } else if (KernelMessage.isExecuteReplyMsg(msg) && retry) {
      retry = false;
      open();
    }
  };
  const follow = () => {
    kernel?.anyMessage.disconnect(onMessage);
    comm = null;
    kernel = panel.sessionContext.session?.kernel ?? null;
    kernel?.anyMessage.connect(onMessage);
    void kernel?.info.then(open);
  };
  panel.sessionContext.kernelChanged.connect(follow);
  void panel.sessionContext.ready.then(follow);
}

/** Connect every notebook of `tracker` to its kernel's `kimi_nb` comm. */
export function connectKernelComms(tracker: INotebookTracker): void {
  tracker.widgetAdded.connect((_, panel) => connect(panel));
}
