"""Benchmark: the StreamParser cost per character stays flat from 10 KB to 1 MB, fed 1 char at a time."""

from __future__ import annotations

import json
import random
import time

from kimi_nb.protocol import Message, StreamParser, ToolCall, render

__all__ = ["main", "measure", "transcript"]

SIZES = {"10KB": 10_000, "20KB": 20_000, "80KB": 80_000, "1MB": 1_000_000}
WORDS = [
    "the",
    "cell",
    "data",
    "frame",
    "plot",
    "error",
    "value",
    "column",
    "index",
    "kernel",
    "import",
    "numpy",
    "pandas",
    "数据",
    "résumé",
]


def _prose(rng: random.Random, size: int) -> str:
    words: list[str] = []
    length = 0
    while length < size:
        word = rng.choice(WORDS)
        words.append(word + ("\n\n" if rng.random() < 0.03 else ". " if rng.random() < 0.1 else " "))
        length += len(words[-1])
    return "".join(words).strip()


def transcript(size: int, *, seed: int = 0) -> str:
    """A realistic raw K2.5 turn of about ``size`` characters: reasoning, then answer text interleaved with
    tool-call sections whose arguments carry whole cell sources."""
    rng = random.Random(seed)
    parts = [f"<think>{_prose(rng, size // 4)}</think>"]
    length = len(parts[0])
    index = 0
    while length < size:
        calls = []
        for _ in range(3):
            source = "\n".join(
                f"x{i} = df['{rng.choice(WORDS)}'].mean()  # {i}" for i in range(rng.randint(5, 60))
            )
            calls.append(
                ToolCall(
                    f"functions.edit_cell:{index}", "edit_cell", {"cell_id": f"c{index}", "source": source}
                )
            )
            index += 1
        text = render(Message(_prose(rng, rng.randint(200, 2000)), "", calls))
        parts.append(text.replace("<|tool_call_begin|>", "\n<|tool_call_begin|>"))
        length += len(parts[-1])
    return "".join(parts)


def measure(text: str) -> tuple[float, Message]:
    """Microseconds per character to stream ``text`` one character at a time (best of a few runs), and
    the parsed message."""
    runs = max(1, min(5, 200_000 // len(text)))
    best = float("inf")
    for _ in range(runs):
        parser = StreamParser(thinking=True)
        feed = parser.feed
        start = time.perf_counter()
        for char in text:
            feed(char)
        parser.close()
        message = parser.finish()
        best = min(best, time.perf_counter() - start)
    return best * 1e6 / len(text), message


def main() -> dict[str, object]:
    """Run the benchmark; returns the results (µs/char per size and the 1MB/10KB ratio)."""
    results: dict[str, object] = {}
    for label, size in SIZES.items():
        text = transcript(size)
        us_per_char, message = measure(text)
        results[f"us_per_char_{label}"] = round(us_per_char, 3)
        results[f"chars_{label}"] = len(text)
        results[f"tool_calls_{label}"] = len(message.tool_calls)
    ratio = float(results["us_per_char_1MB"]) / float(results["us_per_char_10KB"])  # type: ignore[arg-type]
    results["ratio_1MB_over_10KB"] = round(ratio, 3)
    return results


if __name__ == "__main__":
    outcome = main()
    for key, value in outcome.items():
        if key.startswith("us_per_char"):
            print(f"{key[12:]:>5}: {value:.3f} µs/char")
    print(f"ratio 1MB/10KB: {outcome['ratio_1MB_over_10KB']}")
    print(json.dumps(outcome))
