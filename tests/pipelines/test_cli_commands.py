"""The small commands, as a user runs them: `judges list` and `render --model` (the final
prompt string with the model's own chat template). No engine is started. The commands run
in this process (invoke_cli) but for two: `judges list` and the offline `render` are the
fast tier's real `python -m magistrate.cli` runs (the engine and Ray tiers run the CLI in
real processes throughout)."""

from __future__ import annotations

import json

from tests.conftest import EXAMPLES, invoke_cli, run_cli


def test_judges_list_shows_every_profile_its_default_mode_and_models():
    """In a real process (`python -m magistrate.cli`), as the other commands here are not."""
    from magistrate.judges.registry import get_judge, judge_names

    result = run_cli("judges", "list")
    assert result.returncode == 0, result.stderr
    header, *lines = result.stdout.splitlines()
    assert header.split()[:4] == ["name", "default", "modes", "models"]
    shown = {line.split()[0]: line.split(None, 3) for line in lines}
    assert set(shown) == set(judge_names())
    for name in judge_names():
        profile = get_judge(name)
        _, default, modes, models = shown[name]
        assert default == profile.default_mode
        assert modes.split(",") == list(profile.modes)
        assert models == (", ".join(profile.models) or "-")  # "-": a profile that names no model
    assert "Skywork/Skywork-Critic-Llama-3.1-70B" in shown["skywork-critic"][3]
    assert "ZiyiYe/Con-J-Qwen2-7B" in shown["con-j"][3]


def test_render_with_a_local_model_folder_prints_the_final_prompt(embedded_model):
    """`--model` takes a local Hugging Face folder; the prompt is the model's chat template
    over the printed messages, plus the verdict's start in logprob mode."""
    from transformers import AutoTokenizer

    from magistrate.judges.registry import get_judge

    tokenizer = AutoTokenizer.from_pretrained(embedded_model)
    for judge, mode in [("skywork-critic", "logprob"), ("con-j", "generate"), ("mt-bench", "generate")]:
        result = invoke_cli("render", "--judge", judge, "--mode", mode, "--model", embedded_model,
                         "--input", str(EXAMPLES / "llmbar-demo.jsonl"), "--limit", "2")
        assert result.returncode == 0, result.stderr[-3000:]
        records = [json.loads(line) for line in result.stdout.splitlines()]
        assert [(r["order"]) for r in records] == ["ab", "ba", "ab", "ba"]
        for record in records:
            expected = tokenizer.apply_chat_template(record["messages"], tokenize=False,
                                                     add_generation_prompt=True)
            if mode == "logprob":
                expected += get_judge(judge).logprob_prefix
            assert record["prompt"] == expected
            assert record["judge"] == judge and record["mode"] == mode


def test_render_with_a_model_that_cannot_be_had_is_a_clear_error(tmp_path):
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    result = invoke_cli("render", "--model", str(folder), "--input", str(EXAMPLES / "llmbar-demo.jsonl"))
    assert result.returncode == 2
    assert "not a Hugging Face model folder" in result.stderr and "Traceback" not in result.stderr
    # A real process: huggingface_hub reads HF_HUB_OFFLINE when it is imported.
    offline = run_cli("render", "--model", "nobody/no-such-judge", "--input",
                      str(EXAMPLES / "llmbar-demo.jsonl"),
                      env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert offline.returncode == 2, offline.stderr[-2000:]
    assert "nobody/no-such-judge" in offline.stderr and "Traceback" not in offline.stderr
