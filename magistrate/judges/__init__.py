"""What a judge is. Pure Python: imports neither ray nor vllm (a test checks)."""

from magistrate.judges.combine import OrderResult, combine
from magistrate.judges.core import Engine, Judge, JudgeSettings
from magistrate.judges.generated import Generation
from magistrate.judges.profile import FormatTemplate, JudgeProfile, Reading
from magistrate.judges.registry import UnknownJudge, get_judge, judge_names, register, unregister
from magistrate.judges.render import final_prompt, orders_for, render_messages

__all__ = [
    "Engine", "FormatTemplate", "Generation", "Judge", "JudgeProfile", "JudgeSettings", "OrderResult",
    "Reading", "UnknownJudge", "combine", "final_prompt", "get_judge", "judge_names",
    "orders_for", "register", "render_messages", "unregister",
]
