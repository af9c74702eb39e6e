"""All of magistrate's benchmarks in one run, on this machine and the embedded judge;
the table is printed last and the figures saved to benchmarks/results/latest.json.

    make bench                      # = .venv/bin/python -m benchmarks.run
    .venv/bin/python -m benchmarks.run --only engine,pipeline --pairs 32

Sections (each a fresh process, one engine at a time, so they do not share the CPU):
  engine    bare vLLM LLM.generate vs the judging core on the same rendered prompts;
            one order vs both, with and without prefix caching; logprob vs generate
  pipeline  `magistrate judge` end to end on the same pairs (warm rate and wall time)
  peer      Ray Data LLM (build_processor + vLLM engine config) on the same prompts, in
            logprob mode and on the generate workload of `feed`
  feed      magistrate judge's warm rate / the bare engine at its best (compiled, every
            prompt at once), in logprob mode and in generate mode (stop strings, the
            lengths the embedded judge writes)
  simulated the real actor code on one core driving a wall-clock double of Con-J-7B on an
            H100: the share of the double's token rate that is used, both modes
  host      `magistrate judge --dry-run` on one actor: host-side pairs/s per core
  scaling   dry runs over 10k, 100k, 1M rows: time and the driver's peak memory
  summary   the end of a 10M-row run: reconciliation from footers and summary.json's
            figures over a synthetic output, time and peak memory (no engine)
  verify    `magistrate verify` over a synthetic 10M-row output and its input: time, the
            verify process's and Ray workers' peak memory (benchmarks/verify.py)
  sharding  one big file (a one-row-group Parquet, a JSONL file) judged as a dry run by 2, 4
            and 8 actors on a head of 8 logical CPUs: wall time, driver and per-actor peak
            memory, bytes read per input byte (benchmarks/sharding.py). Hours at its
            default 2M rows on 2 cores, so only when named: --only sharding
Results go in docs/performance.md by hand, with the date and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq

from benchmarks.common import HERE, llmbar_pairs, run_measured, synthetic_pairs, write_jsonl

PY = sys.executable
MAGISTRATE = [PY, "-m", "magistrate.cli", "judge"]
SECTIONS = ("engine", "pipeline", "peer", "feed", "simulated", "host", "scaling", "summary", "verify", "sharding")
DEFAULT = [name for name in SECTIONS if name != "sharding"]


def _json_out(out: str) -> dict:
    """The section's JSON line: the last line that is one (Ray forwards actors' log lines
    to stdout, some after the benchmark has printed)."""
    return json.loads(next(line for line in reversed(out.splitlines()) if line.startswith("{")))


def engine(args, work: Path) -> dict:
    common = [PY, "-m", "benchmarks.engine_rates", "--pairs", str(args.pairs)]
    on = _json_out(run_measured(common)[2])
    off = _json_out(run_measured([*common, "--no-prefix-caching", "--generate-pairs", "0"])[2])
    return {"prefix_caching_on": on, "prefix_caching_off": off}


def _magistrate_warm(pairs: list[dict], out: Path, *options: str) -> dict:
    """`magistrate judge` on these pairs: its warm rate (pairs / the actor's busy time,
    engine start excluded) and its wall rate."""
    src = write_jsonl(pairs, out.with_suffix(".jsonl"))
    run_measured([*MAGISTRATE, "--input", str(src), "--output", str(out), *options])
    summary = json.loads((out / "summary.json").read_text())
    run = summary["this_run"]
    return {"pairs": run["pairs"], "unit_seconds": run["unit_seconds"], "wall_s": summary["seconds"],
            "pairs_per_s_warm": round(run["pairs"] / run["unit_seconds"], 3),
            "pairs_per_s_wall": summary["pairs_per_second"]}


def pipeline(args, work: Path) -> dict:
    return _magistrate_warm(llmbar_pairs(args.pairs + 4)[4:], work / "pipeline", "--batch-size", "64")


def peer(args, work: Path) -> dict:
    results = {}
    for mode, pairs in (("logprob", args.pairs), ("generate", args.generate_pairs)):
        try:
            results[mode] = _json_out(run_measured([PY, "-m", "benchmarks.ray_data_llm", "--pairs", str(pairs),
                                                    "--mode", mode])[2])
        except SystemExit as exc:  # report why it cannot run, not a traceback of ours
            results[mode] = {"error": str(exc)[-1500:]}
        if mode == "generate":
            results["generate_magistrate"] = _magistrate_warm(llmbar_pairs(pairs + 4)[4:], work / "peer-generate",
                                                              "--mode", "generate")
    return results


def feed(args, work: Path) -> dict:
    """Each mode: the bare engine given every prompt at once, then magistrate on the same
    pairs, both compiled (the bare engine's best here) and with the same threads. The two
    alternate --feed-repeats times and each side's fastest run counts: this machine's pace
    drifts by up to 20 % between runs minutes apart (docs/performance.md), more than the
    gap being measured."""
    results = {}
    for mode in args.feed_modes.split(","):
        pairs = args.feed_pairs if mode == "logprob" else args.generate_pairs
        bares, ours = [], []
        for repeat in range(args.feed_repeats):
            bares.append(_json_out(run_measured([PY, "-m", "benchmarks.bare_engine", "--pairs", str(pairs),
                                                 "--mode", mode, "--compilation", "compiled"])[2]))
            ours.append(_magistrate_warm(llmbar_pairs(pairs + 4)[4:], work / f"feed-{mode}-{repeat}", "--mode", mode,
                                         "--compilation", "compiled"))
        bare = max(bares, key=lambda b: b["pairs_per_s"])
        best = max(ours, key=lambda o: o["pairs_per_s_warm"])
        results[mode] = {"bare": bare, "magistrate": best,
                         "bare_runs_pairs_per_s": [b["pairs_per_s"] for b in bares],
                         "magistrate_runs_pairs_per_s_warm": [o["pairs_per_s_warm"] for o in ours],
                         "ratio": round(best["pairs_per_s_warm"] / bare["pairs_per_s"], 3)}
    return results


def simulated(args, work: Path) -> dict:
    out = run_measured([PY, "-m", "benchmarks.simulated_gpu", "--pairs", str(args.simulated_pairs)])[2]
    return {"runs": [json.loads(line) for line in out.splitlines() if line.startswith("{")]}


def host(args, work: Path) -> dict:
    """One actor, one core (the tokenizer's own threads off), the engine skipped."""
    results = {}
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    base = llmbar_pairs()
    rows = llmbar_pairs(repeat=max(1, args.host_rows // len(base)))
    src = write_jsonl(rows, work / "host.jsonl")
    for judge in ("mt-bench", str(HERE / "short_judge.yaml")):
        out = work / f"host-{Path(judge).stem}"
        run_measured([*MAGISTRATE, "--input", str(src), "--output", str(out), "--dry-run", "--judge", judge,
                      "--replicas", "1", "--batch-size", "512"], env=env)
        summary = json.loads((out / "summary.json").read_text())
        run = summary["this_run"]
        results[Path(judge).stem] = {
            "pairs": run["pairs"], "unit_seconds": run["unit_seconds"],
            "pairs_per_s_per_core": round(run["pairs"] / run["unit_seconds"], 1),
            "prompt_tokens_per_pair": round(summary["prompt_tokens"] / run["pairs"], 1),
        }
    return results


def scaling(args, work: Path) -> dict:
    results = {}
    for rows in args.scaling:
        inputs, out = work / f"scale-{rows}", work / f"scale-{rows}-out"
        inputs.mkdir()
        pq.write_table(synthetic_pairs(0, rows), inputs / "part-0.parquet", row_group_size=2048)
        peak, seconds, _ = run_measured([
            *MAGISTRATE, "--input", str(inputs), "--output", str(out), "--dry-run", "--order", "ab",
            "--judge", str(HERE / "short_judge.yaml"), "--replicas", "2", "--batch-size", "2048"])
        results[str(rows)] = {"seconds": round(seconds, 1), "driver_peak_rss_mib": round(peak),
                              "pairs_per_s": round(rows / seconds, 1)}
    return results


def summary(args, work: Path) -> dict:
    return _json_out(run_measured([PY, "-m", "benchmarks.summary_scale", "--rows", str(args.summary_rows)])[2])


def sharding(args, work: Path) -> dict:
    """Its progress goes to stderr as it runs (a run at 2M rows takes most of an hour). Runs
    at another size or actor count measured before are kept."""
    out = subprocess.run([PY, "-m", "benchmarks.sharding", "--rows", str(args.sharding_rows),
                          "--actors", args.sharding_actors, "--formats", args.sharding_formats],
                         stdout=subprocess.PIPE, text=True, check=True).stdout
    runs = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    measured = time.strftime("%Y-%m-%d %H:%M")
    key = lambda r: (r["format"], r["rows"], r["actors"])  # noqa: E731
    new = {key(r) for r in runs}
    target = HERE / "results" / "latest.json"
    before = json.loads(target.read_text()).get("sharding", {}).get("runs", []) if target.exists() else []
    kept = [r for r in before if key(r) not in new]
    return {"runs": sorted(kept + [{**r, "measured": measured} for r in runs], key=key)}


def verify(args, work: Path) -> dict:
    return _json_out(run_measured([PY, "-m", "benchmarks.verify", "--rows", str(args.verify_rows)])[2])


def table(r: dict) -> str:
    lines = [("measure", "figure", "target")]
    if "engine" in r:
        on, off = r["engine"]["prefix_caching_on"], r["engine"]["prefix_caching_off"]
        rate = on["pairs_per_s"]
        lines += [
            ("bare vLLM, both orders (pairs/s)", f"{rate['bare_engine_both']}", "ceiling"),
            ("judging core / bare engine", f"{rate['core_logprob_both'] / rate['bare_engine_both']:.3f}", ">= 0.9"),
            ("logprob vs generate (speed-up)",
             f"{rate['core_logprob_both'] / rate['core_generate_both']:.1f}x" if "core_generate_both" in rate else "-", ""),
            ("both / one order cost, prefix cache on",
             f"{on['seconds']['core_logprob_both'] / on['seconds']['core_logprob_ab']:.2f}", ""),
            ("both / one order cost, prefix cache off",
             f"{off['seconds']['core_logprob_both'] / off['seconds']['core_logprob_ab']:.2f}", ""),
            ("prefix cache speed-up, both orders",
             f"{off['seconds']['core_logprob_both'] / on['seconds']['core_logprob_both']:.2f}x", ""),
        ]
        if "pipeline" in r:
            p = r["pipeline"]
            lines.append(("magistrate judge (warm) / bare engine",
                          f"{p['pairs_per_s_warm'] / rate['bare_engine_both']:.3f}", ">= 0.9"))
    if "pipeline" in r:
        p = r["pipeline"]
        lines += [("magistrate judge warm (pairs/s)", str(p["pairs_per_s_warm"]), ""),
                  ("magistrate judge wall, engine start incl. (pairs/s)", str(p["pairs_per_s_wall"]), "")]
    peer_r = r.get("peer", {})
    for mode, ours in (("logprob", r.get("pipeline")), ("generate", peer_r.get("generate_magistrate"))):
        if mode not in peer_r:
            continue
        if "error" in peer_r[mode]:
            lines.append((f"Ray Data LLM, {mode}", "could not run: see results", ""))
            continue
        lines.append((f"Ray Data LLM wall, {mode} (pairs/s)", str(peer_r[mode]["pairs_per_s_wall"]), ""))
        if ours:
            lines.append((f"2. magistrate / Ray Data LLM, wall, {mode}",
                          f"{ours['pairs_per_s_wall'] / peer_r[mode]['pairs_per_s_wall']:.2f}", "> 1"))
    for mode, number in (("generate", 1), ("logprob", 3)):
        if mode in r.get("feed", {}):
            f = r["feed"][mode]
            lines.append((f"{number}. magistrate warm / bare engine compiled, {mode}", f"{f['ratio']:.3f}", ">= 0.95"))
    for run in r.get("simulated", {}).get("runs", []):
        lines.append((f"4. simulated H100, {run['mode']}, {run['path']}: token-rate share",
                      f"{run['token_rate_share']:.3f}", ">= 0.97" if run["path"] == "continuous" else ""))
    for name, h in ((k, v) for k, v in r.get("host", {}).items() if isinstance(v, dict)):
        lines.append((f"host side, {name} ({h['prompt_tokens_per_pair']} tok/pair), pairs/s/core",
                      str(h["pairs_per_s_per_core"]), ">= 5000"))
    for rows, s in ((k, v) for k, v in r.get("scaling", {}).items() if isinstance(v, dict)):
        lines.append((f"dry run {int(rows):,} rows: s / driver peak MiB",
                      f"{s['seconds']} / {s['driver_peak_rss_mib']}", "flat memory"))
    if "rows" in r.get("summary", {}):
        s = r["summary"]
        lines.append((f"summary + reconciliation, {s['rows']:,} rows: s / peak MiB",
                      f"{round(s['footers_s'] + s['summarise_s'], 1)} / {s['peak_rss_mib']}", "seconds, flat memory"))
    for s in r.get("sharding", {}).get("runs", []):
        lines.append((f"one {s['format']} file, {s['rows']:,} rows, {s['actors']} actors: s / driver / actor peak MiB"
                      " / bytes read per input byte",
                      f"{s['wall_s']} / {s['driver_peak_rss_mib']} / {s['actor_peak_mib']} / "
                      f"{s.get('bytes_read_per_input_byte', '-')}", "flat memory, reads <= ~2-3"))
    if "rows" in r.get("verify", {}):
        v = r["verify"]
        lines.append((f"verify, {v['rows']:,} rows: s / verify process / largest Ray worker peak MiB",
                      f"{v['verify_s']} / {v['driver_peak_rss_mib']} / {v['worker_peak_rss_mib']}", "bounded memory"))
    width = [max(len(row[i]) for row in lines) for i in range(3)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, width)) for row in lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default=",".join(DEFAULT),
                        help=f"comma-separated of {', '.join(SECTIONS)} (default: all but sharding)")
    parser.add_argument("--pairs", type=int, default=32, help="LLMBar pairs for the engine-bound sections")
    parser.add_argument("--feed-pairs", type=int, default=72, help="LLMBar pairs for feed's logprob ratio")
    parser.add_argument("--feed-repeats", type=int, default=2, help="alternating runs of each side in feed")
    parser.add_argument("--feed-modes", default="logprob,generate", help="feed's modes, comma-separated")
    parser.add_argument("--generate-pairs", type=int, default=32, help="LLMBar pairs for the generate workload")
    parser.add_argument("--simulated-pairs", type=int, default=3072)
    parser.add_argument("--host-rows", type=int, default=10_000)
    parser.add_argument("--summary-rows", type=int, default=10_000_000)
    parser.add_argument("--verify-rows", type=int, default=10_000_000)
    parser.add_argument("--scaling", default="10000,100000,1000000",
                        type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--sharding-rows", type=int, default=2_000_000, help="rows of sharding's one file")
    parser.add_argument("--sharding-actors", default="2,4,8", help="sharding's actor counts, comma-separated")
    parser.add_argument("--sharding-formats", default="parquet,jsonl", help="sharding's formats, comma-separated")
    args = parser.parse_args()
    chosen = args.only.split(",")
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}")
    work = Path(tempfile.mkdtemp(prefix="magistrate-bench-"))
    target = HERE / "results" / "latest.json"
    # Sections run alone (--only) update their entries; the others keep their last figures.
    results = json.loads(target.read_text()) if target.exists() else {}
    results.update({"date": time.strftime("%Y-%m-%d"), "machine": {
        "cpus": os.cpu_count(), "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "processor": platform.processor() or platform.machine(), "python": platform.python_version()}})
    for name in SECTIONS:
        if name in chosen:
            print(f"benchmark: {name} ...", file=sys.stderr, flush=True)
            started = time.monotonic()
            results[name] = globals()[name](args, work)
            results[name]["measured"] = time.strftime("%Y-%m-%d %H:%M")
            print(f"benchmark: {name} done in {time.monotonic() - started:.0f} s: "
                  f"{json.dumps(results[name])}", file=sys.stderr, flush=True)
    target.parent.mkdir(exist_ok=True)
    target.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nfigures: {target}\n")
    print(table(results))


if __name__ == "__main__":
    main()
