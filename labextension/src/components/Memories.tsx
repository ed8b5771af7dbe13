/**
 * What Kimi remembers across sessions (the server's memory store), with Forget per note and Forget all.
 */
import React, { useEffect, useState } from 'react';

import { IMemory, deleteMemory, fetchMemories } from '../request';

/** The memory list, loaded when shown. */
export function Memories(props: { onClose: () => void }): JSX.Element {
  const [memories, setMemories] = useState<IMemory[] | null>(null);
  const [problem, setProblem] = useState<string | null>(null);

  const load = async () => {
    try {
      setMemories(await fetchMemories());
      setProblem(null);
    } catch (error) {
      setProblem((error as Error).message);
    }
  };
  const forget = async (key?: string) => {
    try {
      await deleteMemory(key);
    } catch (error) {
      setProblem((error as Error).message);
    }
    await load();
  };
  useEffect(() => void load(), []);

  return (
    <section
      className="kimi-memories"
      aria-label="Kimi's memories"
      data-testid="kimi-memories"
    >
      <header className="kimi-memories-header">
        <span>Memories</span>
        <button
          type="button"
          className="kimi-code-button kimi-forget-all"
          aria-label="Forget all memories"
          disabled={!memories?.length}
          onClick={() => void forget()}
        >
          Forget all
        </button>
        <button
          type="button"
          className="kimi-code-button"
          aria-label="Close the memories"
          onClick={props.onClose}
        >
          Close
        </button>
      </header>
      {problem && (
        <p className="kimi-error" role="alert">
          {problem}
        </p>
      )}
      {memories?.length === 0 && (
        <p className="kimi-empty">Nothing remembered yet.</p>
      )}
      <ul className="kimi-memory-list">
        {memories?.map(memory => (
          <li key={memory.key} className="kimi-memory">
            <span className="kimi-memory-key">{memory.key}</span>
            <span className="kimi-memory-content">{memory.content}</span>
            <button
              type="button"
              className="kimi-chip-remove"
              aria-label={`Forget ${memory.key}`}
              onClick={() => void forget(memory.key)}
            >
              ×
            </button>
          </li>
        ))}
      </ul>
    </section>
  );
}
