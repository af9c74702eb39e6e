"""What the benchmarks share: inputs, and running a command while watching its memory."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pyarrow as pa

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
LLMBAR = REPO / "examples" / "data" / "llmbar.jsonl"


def synthetic_pairs(start: int, rows: int) -> pa.Table:
    """Short arithmetic pairs with unique ids: data-plane load without long prompts."""
    ids = range(start, start + rows)
    return pa.table({
        "id": [f"p{i}" for i in ids],
        "prompt": [f"What is {i} plus {i}?" for i in ids],
        "response_a": [f"{2 * i}." for i in ids],
        "response_b": [f"{i}." for i in ids],
    })


def llmbar_pairs(n: int | None = None, repeat: int = 1) -> list[dict]:
    """Real LLMBar pairs; `repeat` copies them under new ids for larger inputs."""
    with open(LLMBAR) as f:
        base = [json.loads(line) for line in f][:n]
    return [dict(p, id=f"{p['id']}-r{r}") if repeat > 1 else p for r in range(repeat) for p in base]


def write_jsonl(rows: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def run_watched(args: list[str], sample, env: dict | None = None, every: float = 0.1) -> tuple[float, str]:
    """Run a command, calling `sample(process)` every `every` s while it runs (the
    process as a psutil.Process); return (wall seconds, stdout). Fails loudly."""
    started = time.monotonic()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    done = threading.Event()

    def watch():
        me = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                sample(me)
            except psutil.NoSuchProcess:
                return
            time.sleep(every)

    watcher = threading.Thread(target=watch)
    watcher.start()
    out, err = proc.communicate()
    done.set()
    watcher.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args[:6])} ... failed:\n{err[-3000:]}")
    return time.monotonic() - started, out


def run_measured(args: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """Run a command; return (its peak RSS in MiB, wall seconds, stdout). Fails loudly."""
    peak = 0

    def rss(process: psutil.Process) -> None:
        nonlocal peak
        peak = max(peak, process.memory_info().rss)

    seconds, out = run_watched(args, rss, env)
    return peak / 2**20, seconds, out
