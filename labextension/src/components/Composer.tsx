/**
 * The prompt box: removable context chips, a textarea that takes pasted or dropped images, Send and Stop.
 */
import { UUID } from '@lumino/coreutils';
import React, { useState } from 'react';

import { Chip } from '../model';
import { IImage } from '../request';

export interface IComposerProps {
  chips: readonly Chip[];
  streaming: boolean;
  onSend: (prompt: string) => void;
  onStop: () => void;
  onRemoveChip: (id: string) => void;
  onImage: (chip: Chip) => void;
}

function readImage(file: File): Promise<IImage> {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => {
      const url = String(reader.result);
      resolve({ mime: file.type, data: url.slice(url.indexOf(',') + 1) });
    };
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

function imageFiles(items: DataTransferItemList | FileList | null): File[] {
  const files: File[] = [];
  const entries: (DataTransferItem | File)[] = items
    ? Array.from<DataTransferItem | File>(items)
    : [];
  for (const item of entries) {
    const file =
      item instanceof File
        ? item
        : item.kind === 'file'
          ? item.getAsFile()
          : null;
    if (file && /^image\/(png|jpeg|gif|webp)$/.test(file.type)) {
      files.push(file);
    }
  }
  return files;
}

function ChipView(props: { chip: Chip; onRemove: () => void }): JSX.Element {
  const { chip } = props;
  return (
    <span
      className={`kimi-chip kimi-chip-${chip.kind}`}
      data-testid="kimi-chip"
      data-kind={chip.kind}
    >
      {chip.kind === 'image' && (
        <img
          className="kimi-chip-thumb"
          alt=""
          src={`data:${chip.image.mime};base64,${chip.image.data}`}
        />
      )}
      <span
        className="kimi-chip-label"
        title={chip.kind === 'selection' ? chip.text : chip.label}
      >
        {chip.label}
      </span>
      <button
        type="button"
        className="kimi-chip-remove"
        aria-label={`Remove ${chip.label} from the context`}
        onClick={props.onRemove}
      >
        ×
      </button>
    </span>
  );
}

/** Chips + input + Send / Stop. */
export function Composer(props: IComposerProps): JSX.Element {
  const [text, setText] = useState('');
  const [dragging, setDragging] = useState(false);

  const send = () => {
    if (text.trim() && !props.streaming) {
      props.onSend(text);
      setText('');
    }
  };
  const addImages = async (files: File[]) => {
    for (const file of files) {
      const image = await readImage(file);
      props.onImage({
        kind: 'image',
        id: UUID.uuid4(),
        image,
        label: file.name || 'pasted image'
      });
    }
  };

  return (
    <div
      className={`kimi-composer${dragging ? ' kimi-composer-drop' : ''}`}
      onDragOver={event => {
        if (Array.from(event.dataTransfer.types).includes('Files')) {
          event.preventDefault();
          setDragging(true);
        }
      }}
      onDragLeave={() => setDragging(false)}
      onDrop={event => {
        const files = imageFiles(event.dataTransfer.files);
        setDragging(false);
        if (files.length) {
          event.preventDefault();
          void addImages(files);
        }
      }}
    >
      {props.chips.length > 0 && (
        <div className="kimi-chips" aria-label="Context to send">
          {props.chips.map(chip => (
            <ChipView
              key={chip.id}
              chip={chip}
              onRemove={() => props.onRemoveChip(chip.id)}
            />
          ))}
        </div>
      )}
      <div className="kimi-input-row">
        <textarea
          className="kimi-chat-input"
          data-testid="kimi-chat-input"
          aria-label="Message Kimi"
          placeholder="Ask Kimi… (Enter sends, Shift+Enter: new line; paste or drop images)"
          rows={3}
          value={text}
          onChange={event => setText(event.target.value)}
          onKeyDown={event => {
            if (
              event.key === 'Enter' &&
              !event.shiftKey &&
              !event.nativeEvent.isComposing
            ) {
              event.preventDefault();
              send();
            }
          }}
          onPaste={event => {
            const files = imageFiles(event.clipboardData.items);
            if (files.length) {
              event.preventDefault();
              void addImages(files);
            }
          }}
        />
        {props.streaming ? (
          <button
            type="button"
            className="jp-Button jp-mod-styled jp-mod-warn kimi-stop"
            data-testid="kimi-stop"
            aria-label="Stop the answer"
            onClick={props.onStop}
          >
            Stop
          </button>
        ) : (
          <button
            type="button"
            className="jp-Button jp-mod-styled jp-mod-accept kimi-send"
            data-testid="kimi-send"
            aria-label="Send"
            disabled={!text.trim()}
            onClick={send}
          >
            Send
          </button>
        )}
      </div>
    </div>
  );
}
