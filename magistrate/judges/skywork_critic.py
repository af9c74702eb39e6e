"""Skywork-Critic-Llama-3.1 (70B and 8B): the model card's prompt, one user message,
no system message, the model's own (Llama 3.1) chat template; verdict "[[A]]"/"[[B]]".

In logprob mode the assistant turn starts with "[[" and p_a is read from the next
token, renormalised over "A" and "B": one forward pass, no decoding.
"""

from magistrate.judges.profile import FormatTemplate, JudgeProfile, packaged_text
from magistrate.judges.verdicts import bracket_reader

PROFILE = JudgeProfile(
    name="skywork-critic",
    aliases=("skywork",),
    version=1,
    description="Skywork-Critic pairwise prompt from the model card; verdict [[A]]/[[B]]",
    models=("Skywork/Skywork-Critic-Llama-3.1-70B", "Skywork/Skywork-Critic-Llama-3.1-8B"),
    system=None,
    user_template=FormatTemplate(packaged_text("skywork_critic.user.txt")),
    slots={"prompt": "input", "a": "response_a", "b": "response_b"},
    read=bracket_reader({"A": "A", "B": "B"}),
    default_mode="logprob",
    labels={"A": "A", "B": "B"},
    # The card asks for the verdict directly; a few tokens are enough.
    max_new_tokens=64,
    stop=("[[A]]", "[[B]]"),
    markers=(
        "[The Start of Assistant A's Answer]", "[The End of Assistant A's Answer]",
        "[The Start of Assistant B's Answer]", "[The End of Assistant B's Answer]",
        "[[A]]", "[[B]]",
    ),
)
