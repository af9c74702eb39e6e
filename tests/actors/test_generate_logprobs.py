"""Generate mode's p_a from the verdict label's log-probabilities, through the engine:
what the engine keeps of vLLM's answer (no engine), and the async engine that batch jobs
and Serve replicas use, on the tiny random-weight judge (one engine, in a subprocess:
the session's in-process engine stays the only one)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest

from magistrate.actors.engine import generated


def test_the_engine_keeps_label_logprobs_only_at_steps_that_wrote_a_label():
    step = lambda **lps: {int(t[1:]): SimpleNamespace(logprob=lp) for t, lp in lps.items()}  # noqa: E731
    completion = SimpleNamespace(text="x [[A]]", token_ids=[7, 3, 5, 9],
                                 logprobs=[step(t7=-0.1, t5=-3, t6=-4), step(t3=-0.2, t5=-5, t6=-6),
                                           step(t5=-0.3, t6=-1.5), step(t9=-0.1, t5=-7, t6=-8)])
    output = SimpleNamespace(outputs=[completion])
    answer = generated(output, label_ids=[5, 6])
    assert (answer.text, answer.completion_tokens, list(answer.token_ids)) == ("x [[A]]", 4, [7, 3, 5, 9])
    assert answer.label_logprobs == {2: {5: -0.3, 6: -1.5}}
    assert generated(output).label_logprobs == {}  # no label ids asked: nothing kept
    assert generated(SimpleNamespace(outputs=[SimpleNamespace(text="", token_ids=[5], logprobs=None)]),
                     label_ids=[5]).label_logprobs == {}


# The tiny judge writes noise, never "[[A]]". So the probe first lets it write, with vLLM's
# top-2 at each step, and takes as the judge's labels the two top tokens of a step whose
# token the reader (a pattern reader, last match wins) then finds: "A" is the token
# written there, "B" the runner-up. Then it judges the same prompt with that judge.
PROBE = textwrap.dedent('''
    import asyncio, json, re, sys
    from dataclasses import replace

    from vllm import SamplingParams

    from magistrate.actors.engine import AsyncVLLMEngine, EngineSettings
    from magistrate.judges import Judge, JudgeSettings, get_judge
    from magistrate.judges.custom import pattern_reader

    model, result = sys.argv[1:3]
    PAIR = {"id": "p", "prompt": "What is 2 + 2?", "response_a": "4.", "response_b": "5."}
    N = 32

    def labels_at(engine, text, ids, steps):
        """(step, written token, runner-up, their texts) for the last step the reader takes."""
        tok = engine.tokenizer
        single = lambda t: tok.encode(tok.decode([t]), add_special_tokens=False) == [t]
        for k in reversed(range(len(ids))):
            top = sorted(steps[k].items(), key=lambda kv: -kv[1].logprob)[:2]
            first, second = top[0][0], top[1][0]
            a, b = tok.decode([first]), tok.decode([second])
            if first != ids[k] or not (single(first) and single(second)) or not (a.strip() and b.strip()):
                continue
            read = pattern_reader("(" + re.escape(a) + "|" + re.escape(b) + ")", {"A": a, "B": b})
            reading = read(text)
            if reading.verdict == "A" and reading.label_at == len(tok.decode(ids[:k])):
                return k, first, second, a, b
        raise SystemExit("no step fits: " + repr(text))

    async def main():
        engine = AsyncVLLMEngine(EngineSettings(model=model, max_model_len=1024, gpu_memory_utilization=0.05,
                                                enable_prefix_caching=False))
        try:
            mt_bench = get_judge("mt-bench")
            probe = Judge(engine, JudgeSettings(judge="mt-bench", mode="generate", order="ab", max_new_tokens=N))
            _, tokens = probe.render(PAIR, "ab")
            [out] = await engine._run([tokens], SamplingParams(max_tokens=N, temperature=0.0, logprobs=2))
            done = out.outputs[0]
            ids = list(done.token_ids)
            k, first, second, a, b = labels_at(engine, done.text, ids, done.logprobs)
            profile = replace(mt_bench, name="tiny-probe", labels={"A": a, "B": b}, stop=(),
                              read=pattern_reader("(" + re.escape(a) + "|" + re.escape(b) + ")", {"A": a, "B": b}))
            judge = Judge(engine, JudgeSettings(mode="generate", order="ab", max_new_tokens=N, profile=profile))
            [row] = await judge.judge_async([PAIR])
            top2 = {str(t): lp.logprob for t, lp in done.logprobs[k].items()}
            with open(result, "w") as f:
                json.dump({"prompt": tokens, "generated": ids, "step": k, "ids": [first, second], "top2": top2,
                           "text": done.text, "row": row}, f)
        finally:
            engine.shutdown()

    asyncio.run(main())
''')


@pytest.mark.engine
def test_generate_mode_reads_p_a_at_the_verdict_token(tmp_path, tiny_model):
    import torch
    from transformers import AutoModelForCausalLM

    probe, result = tmp_path / "probe.py", tmp_path / "result.json"
    probe.write_text(PROBE)
    done = subprocess.run([sys.executable, str(probe), tiny_model, str(result)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(result.read_text())
    row, (a, b), k = got["row"], got["ids"], got["step"]
    assert row["error"] is None, row["error"]
    assert (row["winner"], row["ab_verdict"], row["ab_raw"]) == ("A", "A", got["text"])  # the reader's verdict
    assert row["ab_p_source"] == "logprobs"
    # vLLM's own top-2 at that step, renormalised over the two labels.
    lp = {int(t): v for t, v in got["top2"].items()}
    expected = 1 / (1 + math.exp(lp[b] - lp[a]))
    assert row["ab_p_a"] == pytest.approx(expected, abs=1e-4)
    assert 0.5 <= row["ab_p_a"] < 1.0  # the greedy token's side, and not the verdict's certainty
    # ...and an independent float32 forward pass over the prompt and the tokens written before it.
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(torch.tensor([got["prompt"] + got["generated"][:k]])).logits[0, -1].double()
    probs = torch.softmax(logits, dim=-1)
    assert row["ab_p_a"] == pytest.approx((probs[a] / (probs[a] + probs[b])).item(), abs=0.02)
