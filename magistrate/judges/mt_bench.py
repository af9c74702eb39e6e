"""MT-Bench "pair-v2": the prompt RewardBench uses for any generative judge.

Texts: allenai/reward-bench rewardbench/generative.py (MTBENCH_V2, MTBENCH_MULTI_V2);
`mt-bench-tie` is FastChat's original with the "[[C]]" tie option
(lm-sys/FastChat fastchat/llm_judge/data/judge_prompts.jsonl). See texts/SOURCES.md.
"""

from magistrate.judges.profile import FormatTemplate, JudgeProfile, packaged_text
from magistrate.judges.verdicts import bracket_reader

_USER = FormatTemplate(packaged_text("mt_bench.user.txt"))
_MULTI_USER = FormatTemplate(packaged_text("mt_bench.multi.user.txt"))
_MARKERS = (
    "[The Start of Assistant A's Answer]", "[The End of Assistant A's Answer]",
    "[The Start of Assistant B's Answer]", "[The End of Assistant B's Answer]",
    "<|The End of Assistant A's Conversation with User|>",
    "<|The End of Assistant B's Conversation with User|>",
    "[[A]]", "[[B]]", "[[C]]",
)

PROFILE = JudgeProfile(
    name="mt-bench",
    version=1,
    description="MT-Bench pair-v2 as in RewardBench: explanation, then [[A]] or [[B]]",
    models=("any instruct model",),
    system=packaged_text("mt_bench.system.txt"),
    user_template=_USER,
    multi_turn_system=packaged_text("mt_bench.multi.system.txt"),
    multi_turn_template=_MULTI_USER,
    read=bracket_reader({"A": "A", "B": "B"}),
    # logprob by default: one forward pass gives a probability for any instruct model,
    # where a small model's free text often carries no verdict at all.
    default_mode="logprob",
    labels={"A": "A", "B": "B"},
    max_new_tokens=512,
    markers=_MARKERS,
)

TIE_PROFILE = JudgeProfile(
    name="mt-bench-tie",
    version=1,
    description="MT-Bench pair-v2 as in FastChat, with [[C]] for a tie",
    models=("any instruct model",),
    system=packaged_text("mt_bench_tie.system.txt"),
    user_template=_USER,
    multi_turn_system=packaged_text("mt_bench_tie.multi.system.txt"),
    multi_turn_template=_MULTI_USER,
    read=bracket_reader({"A": "A", "B": "B", "tie": "C"}),
    default_mode="generate",
    labels={"A": "A", "B": "B", "tie": "C"},
    max_new_tokens=512,
    markers=_MARKERS,
)
