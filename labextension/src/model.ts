/**
 * The state of the chat sidebar: one conversation per notebook path (persisted in the state database so it
 * survives a reload), the context chips of the next prompt, the running request and its proposals.
 */
import { INotebookTracker } from '@jupyterlab/notebook';
import { IStateDB } from '@jupyterlab/statedb';
import { ReadonlyPartialJSONValue, UUID } from '@lumino/coreutils';
import { ISignal, Signal } from '@lumino/signaling';

import {
  applyProposal,
  cellIndex,
  cellLabel,
  findPanel,
  showCell
} from './notebook';
import {
  ChatEvent,
  IErrorContext,
  IImage,
  IProposal,
  IStatus,
  IUsage,
  fetchStatus,
  streamChat
} from './request';
import { IKimiSettings } from './settings';

/** A piece of context shown above the input; each is removable. */
export type Chip =
  | { kind: 'cell'; id: string; cellId: string; label: string; auto: boolean }
  | {
      kind: 'selection';
      id: string;
      cellId: string;
      text: string;
      label: string;
    }
  | { kind: 'error'; id: string; error: IErrorContext; label: string }
  | { kind: 'image'; id: string; image: IImage; label: string };

/** A proposal and what the user did with it. */
export interface IProposalItem {
  proposal: IProposal;
  /** Which cell it changes, as the user sees it ("cell [3]", "after cell 2", "at the top"). */
  target?: string;
  state: 'pending' | 'accepted' | 'rejected' | 'failed';
  note: string | null;
}

/** A tool the agent called during a turn. */
export interface IToolItem {
  id: string;
  name: string;
  done: boolean;
  isError: boolean;
}

/** One message of the conversation. */
export interface ITurn {
  id: string;
  role: 'user' | 'assistant';
  text: string;
  reasoning: string;
  context: string[];
  tools: IToolItem[];
  proposals: IProposalItem[];
  notices: string[];
  usage: IUsage | null;
  error: string | null;
  streaming: boolean;
  stopped: string | null;
}

interface IConversation {
  path: string;
  turns: ITurn[];
  history: unknown[] | null;
}

const STATE_PREFIX = 'kimi-nb:chat:';

function newTurn(role: ITurn['role'], text = ''): ITurn {
  return {
    id: UUID.uuid4(),
    role,
    text,
    reasoning: '',
    context: [],
    tools: [],
    proposals: [],
    notices: [],
    usage: null,
    error: null,
    streaming: false,
    stopped: null
  };
}

/** The chat sidebar's model. */
export class ChatModel {
  constructor(options: ChatModel.IOptions) {
    this._state = options.state;
    this._tracker = options.tracker;
    this.settings = options.settings;
  }

  /** Emitted whenever anything shown changes. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** UI settings from the settings registry. */
  settings: IKimiSettings;

  /** The notebook path the conversation belongs to ("" when no notebook is open). */
  get path(): string {
    return this._conversation.path;
  }

  get turns(): readonly ITurn[] {
    return this._conversation.turns;
  }

  get chips(): readonly Chip[] {
    return this._chips;
  }

  get streaming(): boolean {
    return this._controller !== null;
  }

  get status(): IStatus | null {
    return this._status;
  }

  /** Why the engine cannot answer, or null when it can. */
  get problem(): string | null {
    return this._problem;
  }

  /** Re-read the engine status from the server. */
  async refreshStatus(): Promise<void> {
    try {
      this._status = await fetchStatus();
      this._problem = this._status.ok
        ? null
        : this._status.message || 'The Kimi engine is not available.';
    } catch (error) {
      this._status = null;
      this._problem = (error as Error).message;
    }
    this._emit();
  }

  /** Show the conversation of the notebook at `path`, loading it from the state database. */
  async setPath(path: string): Promise<void> {
    if (path === this._conversation.path) {
      return;
    }
    this._chips = this._chips.filter(chip => chip.kind === 'image');
    let conversation = this._conversations.get(path);
    if (!conversation) {
      conversation = { path, turns: [], history: null };
      this._conversations.set(path, conversation);
      if (path) {
        const saved = (await this._state.fetch(
          STATE_PREFIX + path
        )) as unknown as IConversation | undefined;
        if (saved && Array.isArray(saved.turns)) {
          conversation.turns = saved.turns.map(turn => ({
            ...turn,
            streaming: false
          }));
          conversation.history = saved.history ?? null;
        }
      }
    }
    this._conversation = conversation;
    this._emit();
  }

  /** Add a context chip (a chip for the same cell and kind replaces the old one). */
  addChip(chip: Chip): void {
    this._chips = this._chips.filter(
      old =>
        !(
          old.kind === chip.kind &&
          'cellId' in old &&
          'cellId' in chip &&
          old.cellId === chip.cellId
        )
    );
    if (chip.kind === 'error') {
      this._chips = this._chips.filter(old => old.kind !== 'error');
    }
    this._chips.push(chip);
    this._emit();
  }

  removeChip(id: string): void {
    const removed = this._chips.find(chip => chip.id === id);
    if (removed?.kind === 'cell' && removed.auto) {
      this._dismissedCell = removed.cellId;
    }
    this._chips = this._chips.filter(chip => chip.id !== id);
    this._emit();
  }

  /** Follow the active cell with an automatic chip (when the setting asks for it). */
  setActiveCell(cellId: string | null, label: string): void {
    this._chips = this._chips.filter(
      chip => !(chip.kind === 'cell' && chip.auto)
    );
    if (cellId !== this._dismissedCell) {
      this._dismissedCell = null;
    }
    const manual = this._chips.some(
      chip => chip.kind === 'cell' && chip.cellId === cellId
    );
    if (
      cellId &&
      this.settings.sendActiveCell &&
      !manual &&
      this._dismissedCell !== cellId
    ) {
      this._chips.unshift({
        kind: 'cell',
        id: UUID.uuid4(),
        cellId,
        label,
        auto: true
      });
    }
    this._activeCellId = cellId;
    this._emit();
  }

  /** Send a prompt with the current chips as context and stream the answer. */
  async send(prompt: string): Promise<void> {
    const text = prompt.trim();
    if (!text || this.streaming) {
      return;
    }
    const conversation = this._conversation;
    const panel = findPanel(this._tracker, conversation.path);
    const chips = this._chips;
    this._chips = chips.filter(chip => chip.kind === 'cell' && chip.auto);

    const user = newTurn('user', text);
    user.context = chips.map(chip => chip.label);
    const answer = newTurn('assistant');
    answer.streaming = true;
    conversation.turns.push(user, answer);
    const controller = new AbortController();
    this._controller = controller;
    this._emit();

    const selections = chips.flatMap(chip =>
      chip.kind === 'selection'
        ? [`Selected in ${chip.label}:\n\`\`\`\n${chip.text}\n\`\`\``]
        : []
    );
    const cellIds = chips.flatMap(chip =>
      chip.kind === 'cell' ? [chip.cellId] : []
    );
    const error = chips.find(chip => chip.kind === 'error');
    try {
      await streamChat(
        {
          prompt: [text, ...selections].join('\n\n'),
          notebook: panel?.context.model.toJSON() ?? null,
          path: conversation.path,
          active_cell_id: this._activeCellId,
          cell_ids: cellIds.length ? cellIds : null,
          images: chips.flatMap(chip =>
            chip.kind === 'image' ? [chip.image] : []
          ),
          error: error?.kind === 'error' ? error.error : null,
          history: conversation.history,
          thinking: this.settings.thinking
        },
        event => this._onEvent(conversation, answer, event),
        controller.signal
      );
    } catch (failure) {
      if ((failure as Error).name === 'AbortError') {
        answer.stopped = 'cancelled';
      } else {
        answer.error = (failure as Error).message;
      }
    } finally {
      answer.streaming = false;
      this._controller = null;
      this._emit();
      await this._save(conversation);
    }
  }

  /** Stop the running request (the server cancels the agent). */
  stop(): void {
    this._controller?.abort();
  }

  /** Forget this notebook's conversation. */
  async clear(): Promise<void> {
    this.stop();
    this._conversation.turns = [];
    this._conversation.history = null;
    this._emit();
    await this._save(this._conversation);
  }

  /** Apply a proposal to its notebook (one undoable step). */
  async accept(turnId: string, callId: string): Promise<void> {
    const item = this._proposal(turnId, callId);
    if (!item || item.state !== 'pending') {
      return;
    }
    const panel = findPanel(this._tracker, this._conversation.path);
    const reason = panel
      ? applyProposal(panel, item.proposal)
      : 'Open the notebook to apply this change.';
    item.state = reason ? 'failed' : 'accepted';
    item.note = reason;
    this._emit();
    await this._save(this._conversation);
  }

  /** Dismiss a proposal: the notebook stays as it is. */
  async reject(turnId: string, callId: string): Promise<void> {
    const item = this._proposal(turnId, callId);
    if (!item || item.state !== 'pending') {
      return;
    }
    item.state = 'rejected';
    this._emit();
    await this._save(this._conversation);
  }

  /** Accept every pending proposal of a turn, in order. */
  async acceptAll(turnId: string): Promise<void> {
    const turn = this._conversation.turns.find(t => t.id === turnId);
    for (const item of turn?.proposals ?? []) {
      await this.accept(turnId, item.proposal.call_id);
    }
  }

  /** Select and scroll to the cell a proposal is about. */
  show(item: IProposalItem): void {
    const panel = findPanel(this._tracker, this._conversation.path);
    const id =
      item.proposal.kind === 'insert' && item.state !== 'accepted'
        ? item.proposal.after_cell_id
        : item.proposal.cell_id;
    if (panel && id) {
      showCell(panel, cellIndex(panel, id));
    }
  }

  private _target(path: string, proposal: IProposal): string {
    const panel = findPanel(this._tracker, path);
    if (proposal.kind !== 'insert') {
      return panel ? cellLabel(panel, proposal.cell_id) : 'a cell';
    }
    if (!proposal.after_cell_id) {
      return 'at the top';
    }
    return panel ? `after ${cellLabel(panel, proposal.after_cell_id)}` : '';
  }

  private _proposal(turnId: string, callId: string): IProposalItem | undefined {
    const turn = this._conversation.turns.find(t => t.id === turnId);
    return turn?.proposals.find(item => item.proposal.call_id === callId);
  }

  private _onEvent(
    conversation: IConversation,
    turn: ITurn,
    event: ChatEvent
  ): void {
    switch (event.type) {
      case 'text':
        turn.text += event.text;
        break;
      case 'reasoning':
        turn.reasoning += event.text;
        break;
      case 'tool_call_started':
        turn.tools.push({
          id: event.id,
          name: event.name,
          done: false,
          isError: false
        });
        break;
      case 'tool_result': {
        const tool = turn.tools.find(t => t.id === event.id);
        if (tool) {
          tool.done = true;
          tool.isError = event.is_error;
        } else {
          turn.tools.push({
            id: event.id,
            name: event.name,
            done: true,
            isError: event.is_error
          });
        }
        break;
      }
      case 'proposal': {
        const { type: _type, ...proposal } = event;
        turn.proposals.push({
          proposal,
          target: this._target(conversation.path, proposal),
          state: 'pending',
          note: null
        });
        break;
      }
      case 'usage':
        turn.usage = addUsage(turn.usage, event);
        break;
      case 'notice':
        turn.notices.push(event.text);
        break;
      case 'done':
        turn.text = event.content || turn.text;
        turn.reasoning = event.reasoning || turn.reasoning;
        turn.usage = event.usage;
        turn.stopped = event.stopped === 'answer' ? null : event.stopped;
        conversation.history = event.messages;
        break;
      case 'error':
        turn.error = event.message;
        break;
      default:
        return;
    }
    this._emit();
  }

  private async _save(conversation: IConversation): Promise<void> {
    if (!conversation.path) {
      return;
    }
    const value = {
      path: conversation.path,
      turns: conversation.turns,
      history: conversation.history
    };
    await this._state.save(
      STATE_PREFIX + conversation.path,
      value as unknown as ReadonlyPartialJSONValue
    );
  }

  private _emit(): void {
    this._changed.emit();
  }

  private _state: IStateDB;
  private _tracker: INotebookTracker;
  private _conversations = new Map<string, IConversation>([
    ['', { path: '', turns: [], history: null }]
  ]);
  private _conversation: IConversation = this._conversations.get('')!;
  private _chips: Chip[] = [];
  private _activeCellId: string | null = null;
  private _dismissedCell: string | null = null;
  private _controller: AbortController | null = null;
  private _status: IStatus | null = null;
  private _problem: string | null = null;
  private _changed = new Signal<this, void>(this);
}

function addUsage(total: IUsage | null, more: IUsage): IUsage {
  return {
    prompt_tokens: (total?.prompt_tokens ?? 0) + more.prompt_tokens,
    completion_tokens: (total?.completion_tokens ?? 0) + more.completion_tokens,
    cached_tokens: (total?.cached_tokens ?? 0) + more.cached_tokens
  };
}

export namespace ChatModel {
  export interface IOptions {
    state: IStateDB;
    tracker: INotebookTracker;
    settings: IKimiSettings;
  }
}
