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

def _profile(name: str, description: str, texts: str, labels: dict, default_mode: str) -> JudgeProfile:
    """The two MT-Bench profiles differ in their system texts, labels and default mode."""
    return JudgeProfile(
        name=name,
        version=1,
        description=description,
        models=("any instruct model",),
        system=packaged_text(f"{texts}.system.txt"),
        user_template=_USER,
        multi_turn_system=packaged_text(f"{texts}.multi.system.txt"),
        multi_turn_template=_MULTI_USER,
        read=bracket_reader(labels),
        default_mode=default_mode,
        labels=labels,
        max_new_tokens=512,
        markers=_MARKERS,
        # The verdict is complete at its marker; a later "Revised verdict" is not waited for.
        stop=tuple(f"[[{label}]]" for label in labels.values()),
    )


# logprob by default: one forward pass gives a probability for any instruct model, where
# a small model's free text often carries no verdict at all.
PROFILE = _profile("mt-bench", "MT-Bench pair-v2 as in RewardBench: explanation, then [[A]] or [[B]]",
                   "mt_bench", {"A": "A", "B": "B"}, "logprob")
TIE_PROFILE = _profile("mt-bench-tie", "MT-Bench pair-v2 as in FastChat, with [[C]] for a tie",
                       "mt_bench_tie", {"A": "A", "B": "B", "tie": "C"}, "generate")
