/**
 * Every call from the browser to the kimi-nb server extension (`{base_url}kimi-nb/api/`).
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** `GET status`. */
export interface IStatus {
  engine: string;
  model: string;
  offline: boolean;
  ok: boolean;
  message: string | null;
}

/** An image sent as context. */
export interface IImage {
  mime: string;
  data: string;
}

/** The error output the user asked to fix. */
export interface IErrorContext {
  cell_id: string;
  ename: string;
  evalue: string;
  traceback: string[];
}

/** `POST chat` body. */
export interface IChatRequest {
  prompt: string;
  notebook: unknown | null;
  path: string;
  active_cell_id: string | null;
  cell_ids: string[] | null;
  images: IImage[];
  error: IErrorContext | null;
  history: unknown[] | null;
  thinking: boolean | null;
}

/** Token counts of a turn. */
export interface IUsage {
  prompt_tokens: number;
  completion_tokens: number;
  cached_tokens: number;
}

/** A change the model proposes; the browser applies it on Accept. */
export interface IProposal {
  call_id: string;
  kind: 'insert' | 'edit' | 'replace' | 'delete';
  cell_id: string;
  before: string;
  after: string;
  diff: string;
  cell_type: string;
  after_cell_id: string | null;
}

/** One line of the NDJSON chat stream (`kimi_nb.agent.event_to_json`). */
export type ChatEvent =
  | { type: 'text'; text: string }
  | { type: 'reasoning'; text: string }
  | { type: 'tool_call_started'; index: number; id: string; name: string }
  | { type: 'tool_call_arguments'; index: number; delta: string }
  | {
      type: 'tool_call';
      id: string;
      name: string;
      arguments: unknown;
      error: string | null;
    }
  | {
      type: 'tool_result';
      id: string;
      name: string;
      content: string;
      is_error: boolean;
      has_image: boolean;
    }
  | ({ type: 'proposal' } & IProposal)
  | ({ type: 'usage' } & IUsage)
  | { type: 'notice'; text: string }
  | {
      type: 'done';
      content: string;
      reasoning: string;
      steps: number;
      stopped: string;
      usage: IUsage;
      messages: unknown[];
    }
  | { type: 'error'; message: string };

/** A memory the agent keeps across sessions. */
export interface IMemory {
  key: string;
  content: string;
  updated_at: string;
}

/** A failed call, with the server's one-line message. */
export class KimiRequestError extends Error {
  constructor(
    message: string,
    readonly status: number
  ) {
    super(message);
  }
}

function apiUrl(settings: ServerConnection.ISettings, path: string): string {
  return URLExt.join(settings.baseUrl, 'kimi-nb', 'api', path);
}

async function send(
  path: string,
  init: RequestInit,
  settings = ServerConnection.makeSettings()
): Promise<Response> {
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(
      apiUrl(settings, path),
      init,
      settings
    );
  } catch (error) {
    if ((error as Error).name === 'AbortError') {
      throw error;
    }
    throw new KimiRequestError('The Jupyter server is not reachable.', 0);
  }
  if (!response.ok) {
    throw new KimiRequestError(await failureMessage(response), response.status);
  }
  return response;
}

async function failureMessage(response: Response): Promise<string> {
  if (response.status === 404) {
    return 'The kimi-nb server extension is not enabled (jupyter server extension enable kimi_nb).';
  }
  try {
    const body = await response.json();
    if (body && typeof body.message === 'string' && body.message) {
      return body.message;
    }
  } catch {
    // not JSON: fall through to the status line
  }
  return `Request failed: HTTP ${response.status} ${response.statusText}`;
}

/** The engine's status: model name, offline or not, and a message when it cannot answer. */
export async function fetchStatus(): Promise<IStatus> {
  const response = await send('status', { method: 'GET' });
  return (await response.json()) as IStatus;
}

/**
 * Stream one chat turn. `onEvent` gets each NDJSON event in order; resolves when the stream ends.
 * Abort with `signal` to stop: the server cancels the agent when the connection closes.
 */
export async function streamChat(
  body: IChatRequest,
  onEvent: (event: ChatEvent) => void,
  signal: AbortSignal
): Promise<void> {
  const response = await send('chat', {
    method: 'POST',
    body: JSON.stringify(body),
    headers: { 'Content-Type': 'application/json' },
    signal
  });
  if (!response.body) {
    throw new KimiRequestError('The server sent no answer stream.', 0);
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let pending = '';
  const emit = (line: string) => {
    if (line.trim()) {
      onEvent(JSON.parse(line) as ChatEvent);
    }
  };
  for (;;) {
    const { done, value } = await reader.read();
    if (done) {
      break;
    }
    pending += decoder.decode(value, { stream: true });
    let newline = pending.indexOf('\n');
    while (newline >= 0) {
      emit(pending.slice(0, newline));
      pending = pending.slice(newline + 1);
      newline = pending.indexOf('\n');
    }
  }
  emit(pending + decoder.decode());
}

/** The agent's stored memories. */
export async function fetchMemories(): Promise<IMemory[]> {
  const response = await send('memory', { method: 'GET' });
  return ((await response.json()) as { memories: IMemory[] }).memories;
}

/** Forget one memory, or all of them when `key` is omitted. */
export async function deleteMemory(key?: string): Promise<void> {
  const path =
    key === undefined ? 'memory' : `memory/${encodeURIComponent(key)}`;
  await send(path, { method: 'DELETE' });
}
