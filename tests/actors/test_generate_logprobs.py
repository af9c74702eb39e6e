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


# The tiny judge writes no verdict: with random weights and tied embeddings it repeats the
# prompt's last token ("\n"). So the probe first lets it write, with vLLM's top-2 at each
# step, and makes a judge whose label "A" is the token written last and "B" the runner-up
# there, with a reader that takes the label ending the text. Then it judges the same
# prompt with that judge, through the async engine and `judge_async`, as batch and Serve do.
PROBE = textwrap.dedent('''
    import asyncio, json, sys
    from dataclasses import replace

    from vllm import SamplingParams

    from magistrate.actors.engine import AsyncVLLMEngine, EngineSettings
    from magistrate.judges import Judge, JudgeSettings, Reading, get_judge

    PAIR = {"id": "p", "prompt": "What is 2 + 2?", "response_a": "4.", "response_b": "5."}
    N = 8

    async def main():
        model, result = sys.argv[1:3]
        engine = AsyncVLLMEngine(EngineSettings(model=model, max_model_len=1024, gpu_memory_utilization=0.2,
                                                enable_prefix_caching=False))
        try:
            probe = Judge(engine, JudgeSettings(judge="mt-bench", mode="generate", order="ab", max_new_tokens=N))
            _, tokens = probe.render(PAIR, "ab")
            [out] = await engine._run([tokens], SamplingParams(max_tokens=N, temperature=0.0, logprobs=2))
            done, k = out.outputs[0], len(out.outputs[0].token_ids) - 1
            (first, _), (second, _) = sorted(done.logprobs[k].items(), key=lambda kv: -kv[1].logprob)[:2]
            a, b = engine.tokenizer.decode([first]), engine.tokenizer.decode([second])

            def read(text):
                return Reading("A", label_at=len(text) - len(a)) if text.endswith(a) else Reading(None, error="no")

            profile = replace(get_judge("mt-bench"), name="tiny-probe", labels={"A": a, "B": b}, stop=(), read=read)
            judge = Judge(engine, JudgeSettings(mode="generate", order="ab", max_new_tokens=N, profile=profile))
            [row] = await judge.judge_async([PAIR])
            with open(result, "w") as f:
                json.dump({"prompt": tokens, "generated": list(done.token_ids), "ids": [first, second],
                           "forms": judge.label_forms, "text": done.text, "row": row,
                           "top2": {str(t): lp.logprob for t, lp in done.logprobs[k].items()},
                           "step_tokens": engine.llm.vllm_config.scheduler_config.max_num_batched_tokens}, f)
        finally:
            engine.shutdown()

    if __name__ == "__main__":  # vLLM spawns its EngineCore, which imports this file again
        asyncio.run(main())
''')


def _why(stderr: str) -> str:
    """vLLM prints an engine's root cause well above its closing "Engine core initialization
    failed" (which alone filled the last 3,000 characters of a failure in the suite)."""
    lines = stderr.splitlines()
    first = next((i for i, line in enumerate(lines) if "Error" in line or "Exception" in line), None)
    cause = "\n".join(lines[max(first - 15, 0):first + 5]) if first is not None else ""
    return f"{cause}\n...\n{stderr[-2000:]}"


@pytest.mark.engine
def test_generate_mode_reads_p_a_at_the_verdict_token(tmp_path, tiny_model):
    import torch
    from transformers import AutoModelForCausalLM

    probe, result = tmp_path / "probe.py", tmp_path / "result.json"
    probe.write_text(PROBE)
    done = subprocess.run([sys.executable, str(probe), tiny_model, str(result)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, _why(done.stderr)
    got = json.loads(result.read_text())
    row, (a, b), k = got["row"], got["ids"], len(got["generated"]) - 1
    assert got["generated"][k] == a and {"A": a, "B": b} in got["forms"], got  # both labels are tokens of their own
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
    # A batch job's engine schedules as vLLM's offline `LLM` does, not at AsyncLLM's own
    # default (2,048 tokens a step whatever the device).
    from vllm import EngineArgs
    from vllm.usage.usage_lib import UsageContext

    assert got["step_tokens"] == EngineArgs.get_batch_defaults(1)[0][UsageContext.LLM_CLASS] != 2048
