"""Golden tests: the chat messages each shipped judge sees equal its source, byte for byte.

The expected values are built here from the source texts themselves, copied into this
module as Python literals, and filled in the way each source fills them. Nothing below
reads magistrate's packaged texts, so a drift in a packaged file (a lost trailing space,
a changed word) fails these tests.

Sources (see magistrate/judges/texts/SOURCES.md):
- mt-bench: allenai/reward-bench rewardbench/generative.py @2560a78c8d02
  (prompt_v2, prompt_multi_v2, MTBENCH_V2, MTBENCH_MULTI_V2, format_judge_answers) and
  scripts/run_generative.py (messages = [system, user]).
- mt-bench-tie: lm-sys/FastChat fastchat/llm_judge/data/judge_prompts.jsonl @0e6e7fdc
  (pair-v2, pair-v2-multi-turn, with the [[C]] tie option).
- skywork-critic: Skywork-Critic-Llama-3.1 model card `prompt_template` (as copied by
  its public copies); one user message, no system message.
- con-j: reward-bench CON_J_PROMPT (= Con-J README), an explicit empty system message.
"""

from __future__ import annotations

import pytest

from magistrate.judges import get_judge, render_messages

# --------------------------------------------------------------------------------------
# Source literals, copied from the sources (not from magistrate).

# reward-bench rewardbench/generative.py: prompt_v2
RB_PROMPT_V2 = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants to the user question displayed below. "
    "You should choose the assistant that follows the user's instructions and answers the user's question better. "
    "Your evaluation should consider factors such as the helpfulness, relevance, accuracy, depth, creativity, and level of detail of their responses. "
    "Begin your evaluation by comparing the two responses and provide a short explanation. "  # This is not in `prompt_v2_gemini`
    "Avoid any position biases and ensure that the order in which the responses were presented does not influence your decision. "
    "Do not allow the length of the responses to influence your evaluation. Do not favor certain names of the assistants. "
    "Be as objective as possible. "
    "After providing your explanation, output your final verdict by strictly following this format: "  # This is not in `prompt_v2_gemini`
    '"[[A]]" if assistant A is better, "[[B]]" if assistant B is better.'  # removed tie option as , and \"[[C]]\ " for a tie;   # This is not in `prompt_v2_gemini`
)

# reward-bench: prompt_multi_v2
RB_PROMPT_MULTI_V2 = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants to the user questions. "
    "You should focus on who provides a better answer to the second user question. "
    "You should choose the assistant that follows the user's instructions and answers the user's question better. "
    "Your evaluation should consider factors such as the helpfulness, relevance, accuracy, depth, creativity, and level of detail of their responses. "
    "Begin your evaluation by comparing the two responses and provide a short explanation. "
    "Avoid any position biases and ensure that the order in which the responses were presented does not influence your decision. "
    "Do not allow the length of the responses to influence your evaluation. Do not favor certain names of the assistants. "
    "Be as objective as possible. After providing your explanation, output your final verdict by strictly following this format: "
    '"[[A]]" if assistant A is better, "[[B]]" if assistant B is better.'  # removed tie option as , and \"[[C]]\" for a tie
)

# reward-bench: MTBENCH_V2["prompt_template"]
RB_MTBENCH_V2_TEMPLATE = "[User Question]\n{question}\n\n[The Start of Assistant A's Answer]\n{answer_a}\n[The End of Assistant A's Answer]\n\n[The Start of Assistant B's Answer]\n{answer_b}\n[The End of Assistant B's Answer]"

# reward-bench: MTBENCH_MULTI_V2["prompt_template"]
RB_MTBENCH_MULTI_V2_TEMPLATE = (
    "<|The Start of Assistant A's Conversation with User|>\n\n### User:\n{question_1}\n\n### Assistant A:\n{answer_a_1}\n\n"
    "### User:\n{question_2}\n\n### Assistant A:\n{answer_a_2}\n\n<|The End of Assistant A's Conversation with User|>\n\n\n"
    "<|The Start of Assistant B's Conversation with User|>\n\n### User:\n{question_1}\n\n### Assistant B:\n{answer_b_1}\n\n"
    "### User:\n{question_2}\n\n### Assistant B:\n{answer_b_2}\n\n<|The End of Assistant B's Conversation with User|>"
)

# FastChat judge_prompts.jsonl line 1 (pair-v2) at main (after its commit 7ad1d638): "system_prompt" and "prompt_template"
FC_PAIR_V2_SYSTEM = "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants to the user question displayed below. You should choose the assistant that follows the user's instructions and answers the user's question better. Your evaluation should consider factors such as the helpfulness, relevance, accuracy, depth, creativity, and level of detail of their responses. Begin your evaluation by comparing the two responses and provide a short explanation. Avoid any position biases and ensure that the order in which the responses were presented does not influence your decision. Do not allow the length of the responses to influence your evaluation. Do not favor certain names of the assistants. Be as objective as possible. After providing your explanation, output your final verdict by strictly following this format: \"[[A]]\" if assistant A is better, \"[[B]]\" if assistant B is better, and \"[[C]]\" for a tie."
FC_PAIR_V2_TEMPLATE = "[User Question]\n{question}\n\n[The Start of Assistant A's Answer]\n{answer_a}\n[The End of Assistant A's Answer]\n\n[The Start of Assistant B's Answer]\n{answer_b}\n[The End of Assistant B's Answer]"

# FastChat judge_prompts.jsonl line 2 (pair-v2-multi-turn)
FC_PAIR_V2_MULTI_SYSTEM = "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants to the user questions. You should choose the assistant that follows the user's instructions and answers the user's questions better. Your evaluation should consider factors such as the helpfulness, relevance, accuracy, depth, creativity, and level of detail of their responses. You should focus on who provides a better answer to the second user question. Begin your evaluation by comparing the responses of the two assistants and provide a short explanation. Avoid any position biases and ensure that the order in which the responses were presented does not influence your decision. Do not allow the length of the responses to influence your evaluation. Do not favor certain names of the assistants. Be as objective as possible. After providing your explanation, output your final verdict by strictly following this format: \"[[A]]\" if assistant A is better, \"[[B]]\" if assistant B is better, and \"[[C]]\" for a tie."
FC_PAIR_V2_MULTI_TEMPLATE = "<|The Start of Assistant A's Conversation with User|>\n\n### User:\n{question_1}\n\n### Assistant A:\n{answer_a_1}\n\n### User:\n{question_2}\n\n### Assistant A:\n{answer_a_2}\n\n<|The End of Assistant A's Conversation with User|>\n\n\n<|The Start of Assistant B's Conversation with User|>\n\n### User:\n{question_1}\n\n### Assistant B:\n{answer_b_1}\n\n### User:\n{question_2}\n\n### Assistant B:\n{answer_b_2}\n\n<|The End of Assistant B's Conversation with User|>"

# Skywork-Critic model card: prompt_template (Python literal as the card's copies show it;
# lines 1 and 2 end with a space, and the closing quotes on their own line give a final "\n").
SKYWORK_PROMPT_TEMPLATE = """Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants to the user question displayed below. You should choose the assistant that follows the user\'s instructions and answers the user\'s question better. 
Your evaluation should consider factors such as the helpfulness, relevance, accuracy, depth, creativity, and level of detail of their responses. Avoid any position biases and ensure that the order in which the responses were presented does not influence your decision. Do not allow the length of the responses to influence your evaluation. Do not favor certain names of the assistants. Be as objective as possible. 
Please directly output your final verdict by strictly following this format: "[[A]]" if assistant A is better, "[[B]]" if assistant B is better.

[User Question]
{input}

[The Start of Assistant A's Answer]
{response_a}
[The End of Assistant A's Answer]

[The Start of Assistant B's Answer]
{response_b}
[The End of Assistant B's Answer]
"""

# reward-bench: CON_J_PROMPT (a str.format template: {{ }} are literal braces; the line
# after "内容：" is four spaces of indentation followed by a "\n" escape).
CON_J_PROMPT = """作为一个评价专家，给定一个问题和它的两个可能的回答，请选出哪一个回答在连贯性、准确性、覆盖度和上述定义的整体质量方面最为符合。请用JSON格式输出你的判断, 其中"原因"是你提供的解释，"更好的回答"是整数类型的1或2，例如{{"原因": "你的解释", "更好的回答": 1}}。以下是问题和候选回答的内容：
    \n问题：{instruction}
回答1：{output_1}
回答2：{output_2}"""


# --------------------------------------------------------------------------------------
# How each source fills its template.


def reward_bench_format_judge_answers(question, answer_a, answer_b, multi_turn=False):
    """reward-bench format_judge_answers, default (MT-Bench) branch. answer_a / answer_b
    are whole conversations (lists of messages), as reward-bench passes them."""
    if multi_turn:
        system_prompt = RB_PROMPT_MULTI_V2
        user_prompt = RB_MTBENCH_MULTI_V2_TEMPLATE.format(
            question_1=question,
            question_2=answer_a[2]["content"],
            answer_a_1=answer_a[1]["content"],
            answer_b_1=answer_b[1]["content"],
            answer_a_2=answer_a[3]["content"],
            answer_b_2=answer_b[3]["content"],
        )
    else:
        system_prompt = RB_PROMPT_V2
        user_prompt = RB_MTBENCH_V2_TEMPLATE.format(
            question=question,
            answer_a=answer_a[1]["content"],
            answer_b=answer_b[1]["content"],
        )
    return system_prompt, user_prompt


def fastchat_messages(question, first, second):
    return [
        {"role": "system", "content": FC_PAIR_V2_SYSTEM},
        {"role": "user", "content": FC_PAIR_V2_TEMPLATE.format(
            question=question, answer_a=first, answer_b=second)},
    ]


def conversation(prompt, response):
    """A pair as reward-bench sees one side of it: the prompt turns plus the response."""
    if isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}]
    return list(prompt) + [{"role": "assistant", "content": response}]


def reward_bench_messages(prompt, first, second):
    conv_a, conv_b = conversation(prompt, first), conversation(prompt, second)
    multi_turn = len(conv_a) > 2  # run_generative.py: len(text_chosen) > 2
    system, user = reward_bench_format_judge_answers(conv_a[0]["content"], conv_a, conv_b, multi_turn)
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def skywork_messages(question, first, second):
    user = SKYWORK_PROMPT_TEMPLATE.format(input=question, response_a=first, response_b=second)
    return [{"role": "user", "content": user}]


def con_j_messages(question, first, second):
    user = CON_J_PROMPT.format(instruction=question, output_1=first, output_2=second)
    return [{"role": "system", "content": ""}, {"role": "user", "content": user}]


# --------------------------------------------------------------------------------------
# A sample pair. Braces and Jinja-like text must reach the judge verbatim.

QUESTION = "What is 2 + 2? Reply in the form {x} or {{ y }}."
RESPONSE_A = "It is 4. As a template: {x} and {{ y }} and {0} and {}."
RESPONSE_B = "Five, I think. }{ {{ y }} {% if x %}z{% endif %}"

EXPECTED_BUILDERS = {
    "mt-bench": reward_bench_messages,
    "mt-bench-tie": fastchat_messages,
    "skywork-critic": skywork_messages,
    "con-j": con_j_messages,
}


def test_source_literals_have_their_documented_bytes():
    """Guard the literals above against editor damage (trailing spaces, final newline)."""
    lines = SKYWORK_PROMPT_TEMPLATE.split("\n")
    assert lines[0].endswith("better. ")
    assert lines[1].endswith("possible. ")
    assert SKYWORK_PROMPT_TEMPLATE.endswith("[The End of Assistant B's Answer]\n")
    assert "\\'" not in SKYWORK_PROMPT_TEMPLATE  # the \' escapes are plain apostrophes
    assert "内容：\n    \n问题：" in CON_J_PROMPT
    assert not CON_J_PROMPT.endswith("\n")
    assert '例如{"原因": "你的解释", "更好的回答": 1}。' in CON_J_PROMPT.format(
        instruction="", output_1="", output_2="")
    assert not RB_PROMPT_V2.endswith(" ") and "[[C]]" not in RB_PROMPT_V2
    assert "[[C]]" in FC_PAIR_V2_SYSTEM and "position biases" in FC_PAIR_V2_SYSTEM


@pytest.mark.parametrize("name", sorted(EXPECTED_BUILDERS))
def test_single_turn_messages_equal_source(name):
    profile = get_judge(name)
    expected = EXPECTED_BUILDERS[name](QUESTION, RESPONSE_A, RESPONSE_B)
    assert render_messages(profile, QUESTION, RESPONSE_A, RESPONSE_B) == expected
    assert render_messages(profile, QUESTION, RESPONSE_A, RESPONSE_B, "ab") == expected


@pytest.mark.parametrize("name", sorted(EXPECTED_BUILDERS))
def test_order_ba_swaps_the_responses(name):
    profile = get_judge(name)
    expected = EXPECTED_BUILDERS[name](QUESTION, RESPONSE_B, RESPONSE_A)
    got = render_messages(profile, QUESTION, RESPONSE_A, RESPONSE_B, "ba")
    assert got == expected
    user = got[-1]["content"]
    assert user.index(RESPONSE_B) < user.index(RESPONSE_A)


@pytest.mark.parametrize("name", sorted(EXPECTED_BUILDERS))
def test_message_roles_as_the_source_sends_them(name):
    messages = render_messages(get_judge(name), QUESTION, RESPONSE_A, RESPONSE_B)
    roles = [m["role"] for m in messages]
    if name == "skywork-critic":
        assert roles == ["user"]
    else:
        assert roles == ["system", "user"]
    if name == "con-j":
        assert messages[0]["content"] == ""


@pytest.mark.parametrize("name", sorted(EXPECTED_BUILDERS))
def test_braces_and_jinja_in_text_appear_verbatim(name):
    messages = render_messages(get_judge(name), QUESTION, RESPONSE_A, RESPONSE_B)
    user = messages[-1]["content"]
    for text in (QUESTION, RESPONSE_A, RESPONSE_B):
        assert text in user
    assert user.count("{{ y }}") == 3


@pytest.mark.parametrize("name", sorted(EXPECTED_BUILDERS))
def test_single_user_message_list_is_the_same_as_a_string_prompt(name):
    profile = get_judge(name)
    as_list = [{"role": "user", "content": QUESTION}]
    assert render_messages(profile, as_list, RESPONSE_A, RESPONSE_B) == render_messages(
        profile, QUESTION, RESPONSE_A, RESPONSE_B)


# --------------------------------------------------------------------------------------
# Multi-turn prompts.

TWO_TURN = [
    {"role": "user", "content": "Name a prime number {p}."},
    {"role": "assistant", "content": "7 is prime. {{ shared }}"},
    {"role": "user", "content": "Now name an even prime."},
]
FINAL_A = "2 is the only even prime. {x}"
FINAL_B = "4 is an even prime. [[B]]"


@pytest.mark.parametrize("order", ["ab", "ba"])
def test_mt_bench_two_turn_uses_the_multi_turn_prompt(order):
    first, second = (FINAL_A, FINAL_B) if order == "ab" else (FINAL_B, FINAL_A)
    got = render_messages(get_judge("mt-bench"), TWO_TURN, FINAL_A, FINAL_B, order)

    expected_user = RB_MTBENCH_MULTI_V2_TEMPLATE.format(
        question_1=TWO_TURN[0]["content"],
        answer_a_1=TWO_TURN[1]["content"],  # the shared assistant turn
        answer_b_1=TWO_TURN[1]["content"],
        question_2=TWO_TURN[2]["content"],
        answer_a_2=first,  # the final responses
        answer_b_2=second,
    )
    assert got == [{"role": "system", "content": RB_PROMPT_MULTI_V2},
                   {"role": "user", "content": expected_user}]
    # The same, built the way reward-bench's format_judgements builds it from whole
    # conversations ([user, assistant, user, assistant]).
    assert got == reward_bench_messages(TWO_TURN, first, second)


def test_mt_bench_tie_two_turn_uses_fastchat_multi_turn_prompt():
    got = render_messages(get_judge("mt-bench-tie"), TWO_TURN, FINAL_A, FINAL_B, "ba")
    expected_user = FC_PAIR_V2_MULTI_TEMPLATE.format(
        question_1=TWO_TURN[0]["content"], answer_a_1=TWO_TURN[1]["content"],
        answer_b_1=TWO_TURN[1]["content"], question_2=TWO_TURN[2]["content"],
        answer_a_2=FINAL_B, answer_b_2=FINAL_A,
    )
    assert got == [{"role": "system", "content": FC_PAIR_V2_MULTI_SYSTEM},
                   {"role": "user", "content": expected_user}]


LONG_CHAT = [
    {"role": "user", "content": "TURN-ONE: hello {a}"},
    {"role": "assistant", "content": "TURN-TWO: hi {{ b }}"},
    {"role": "user", "content": "TURN-THREE: tell me a joke"},
    {"role": "assistant", "content": "TURN-FOUR: why did the chicken"},
    {"role": "user", "content": "TURN-FIVE: another one"},
]


def _assert_in_order(text, parts):
    position = -1
    for part in parts:
        found = text.find(part, position + 1)
        assert found > position, f"{part!r} missing or out of order"
        position = found


@pytest.mark.parametrize("name", ["skywork-critic", "con-j"])
@pytest.mark.parametrize("prompt", [LONG_CHAT, TWO_TURN], ids=["five-turn", "two-turn"])
def test_multi_turn_prompt_is_a_transcript_for_other_judges(name, prompt):
    profile = get_judge(name)
    messages = render_messages(profile, prompt, FINAL_A, FINAL_B)
    # Same message shape as a single-turn prompt.
    assert [m["role"] for m in messages] == [
        m["role"] for m in EXPECTED_BUILDERS[name](QUESTION, FINAL_A, FINAL_B)]
    user = messages[-1]["content"]
    _assert_in_order(user, [m["content"] for m in prompt] + [FINAL_A, FINAL_B])
    # The judge's own text around the question is still there.
    if name == "skywork-critic":
        assert user.startswith(SKYWORK_PROMPT_TEMPLATE.split("{input}")[0])
    else:
        assert user.startswith(CON_J_PROMPT.split("{instruction}")[0].replace("{{", "{").replace("}}", "}"))


def test_mt_bench_other_multi_turn_shape_uses_single_turn_prompt_with_transcript():
    messages = render_messages(get_judge("mt-bench"), LONG_CHAT, FINAL_A, FINAL_B)
    assert messages[0] == {"role": "system", "content": RB_PROMPT_V2}
    user = messages[1]["content"]
    assert user.startswith("[User Question]\n")
    _assert_in_order(user, [m["content"] for m in LONG_CHAT] + [
        "[The Start of Assistant A's Answer]\n" + FINAL_A,
        "[The Start of Assistant B's Answer]\n" + FINAL_B])
