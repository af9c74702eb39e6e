"""`magistrate select --format`: the DPO file read back by TRL's own functions. Chat prompts
give the conversational form, which TRL renders with the model's chat template (here the
embedded judge's tokenizer, ChatML); plain prompts the standard form, which it leaves as is."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import trl.data_utils as trl_data  # the dev extra pins it: a missing TRL fails, not skips

from tests.analysis.conftest import synthetic_rows, write_output
from tests.conftest import invoke_cli

SYSTEM = {"role": "system", "content": "You answer in one line."}


def _chat_rows(n: int = 90) -> list[dict]:
    """Judged pairs whose prompts are chat (a system turn and an earlier exchange, or a system
    turn alone before the user's), a third of them plain strings; `prompt` holds the JSON
    text of the messages, as `magistrate judge` writes it."""
    rows = synthetic_rows(n, seed=5, labels=False, subsets=False)
    for i, row in enumerate(rows):
        if i % 3 == 0:
            messages = [SYSTEM, {"role": "user", "content": f"first turn {i}"},
                        {"role": "assistant", "content": f"first reply {i}"},
                        {"role": "user", "content": f"follow-up {i}"}]
        elif i % 3 == 1:
            messages = [SYSTEM, {"role": "user", "content": f"only turn {i}"}]
        else:
            continue
        row["prompt_messages"] = messages
        row["prompt"] = json.dumps(messages)
    return rows


def _kept(rows: list[dict]) -> dict[str, dict]:
    """Every row with a winner (--min-confidence 0), by id: its prompt as messages, and the
    winner's and the other's text."""
    kept = {}
    for r in rows:
        if r.get("winner") in ("A", "B"):
            a, b = r["response_a"], r["response_b"]
            chosen, rejected = (a, b) if r["winner"] == "A" else (b, a)
            messages = r.get("prompt_messages") or [{"role": "user", "content": r["prompt"]}]
            kept[r["id"]] = {"messages": messages, "prompt": r["prompt"], "chosen": chosen, "rejected": rejected}
    return kept


def _select(tmp_path, rows: list[dict], *flags: str):
    out = write_output(tmp_path / "out", rows)
    target = tmp_path / "dpo.parquet"
    result = invoke_cli("select", str(out), "--min-confidence", "0", "--output", str(target), *flags)
    return result, target


@pytest.fixture(scope="module")
def tokenizer(embedded_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(embedded_model)


@pytest.mark.parametrize("flags", [(), ("--format", "conversational")])
def test_chat_prompts_give_the_conversational_form(tmp_path, tokenizer, flags):
    rows = _chat_rows()
    result, target = _select(tmp_path, rows, *flags)
    assert result.returncode == 0, result.stderr
    assert "(conversational form)" in result.stdout
    table = pq.read_table(target)
    messages = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    assert [table.schema.field(c).type for c in ("prompt", "chosen", "rejected")] == [messages] * 3
    assert table.column_names == ["id", "prompt", "chosen", "rejected", "confidence"]
    want = _kept(rows)
    got = {r["id"]: r for r in table.to_pylist()}
    assert got.keys() == want.keys()
    assert {len(w["messages"]) for w in want.values()} == {1, 2, 4}  # plain, system + user, multi-turn
    for key, w in want.items():
        row = got[key]
        assert row["prompt"] == w["messages"]  # system and earlier turns kept, in order
        assert row["chosen"] == [{"role": "assistant", "content": w["chosen"]}]
        assert row["rejected"] == [{"role": "assistant", "content": w["rejected"]}]
        assert trl_data.is_conversational(row)
        rendered = trl_data.maybe_apply_chat_template(row, tokenizer)
        assert rendered["prompt"] == tokenizer.apply_chat_template(w["messages"], tokenize=False,
                                                                   add_generation_prompt=True)
        at = 0
        for turn in w["messages"]:  # each turn's text, in order, in its role's block
            at = rendered["prompt"].index(f"<|im_start|>{turn['role']}\n{turn['content']}<|im_end|>", at)
        assert rendered["prompt"].endswith("<|im_start|>assistant\n")
        assert rendered["chosen"] == f"{w['chosen']}<|im_end|>\n"
        assert rendered["rejected"] == f"{w['rejected']}<|im_end|>\n"


def test_the_conversational_file_loads_with_datasets_as_dpotrainer_reads_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from datasets import load_dataset

    result, target = _select(tmp_path, _chat_rows(30))
    assert result.returncode == 0, result.stderr
    dataset = load_dataset("parquet", data_files=str(target), split="train", cache_dir=str(tmp_path / "hf"))
    assert len(dataset) == len(_kept(_chat_rows(30))) > 0
    assert all(trl_data.is_conversational(example) for example in dataset)
    assert dataset[0]["chosen"][0]["role"] == "assistant"


@pytest.mark.parametrize("flags", [(), ("--format", "standard")])
def test_plain_prompts_give_the_standard_form(tmp_path, tokenizer, flags):
    rows = synthetic_rows(60, seed=5)
    result, target = _select(tmp_path, rows, *flags)
    assert result.returncode == 0, result.stderr
    assert "(standard form)" in result.stdout
    table = pq.read_table(target)
    assert all(table.schema.field(c).type == pa.string() for c in ("prompt", "chosen", "rejected"))
    want = _kept(rows)
    got = table.to_pylist()
    assert {r["id"] for r in got} == want.keys()
    for row in got:
        w = want[row["id"]]
        assert (row["prompt"], row["chosen"], row["rejected"]) == (w["prompt"], w["chosen"], w["rejected"])
        assert not trl_data.is_conversational(row)
        assert trl_data.maybe_apply_chat_template(row, tokenizer) == row  # TRL leaves it as it is


def test_plain_prompts_as_conversations_on_request(tmp_path, tokenizer):
    rows = synthetic_rows(60, seed=5)
    result, target = _select(tmp_path, rows, "--format", "conversational")
    assert result.returncode == 0, result.stderr
    want = _kept(rows)
    for row in pq.read_table(target).to_pylist():
        assert row["prompt"] == [{"role": "user", "content": want[row["id"]]["prompt"]}]
        assert trl_data.is_conversational(row)
        rendered = trl_data.maybe_apply_chat_template(row, tokenizer)
        assert f"<|im_start|>user\n{want[row['id']]['prompt']}<|im_end|>" in rendered["prompt"]


def test_the_form_follows_the_output_not_the_rows_kept(tmp_path):
    """Chat prompts anywhere in the output make the file conversational, even when no pair
    passes the threshold: the file's schema does not change with --min-confidence."""
    out = write_output(tmp_path / "out", _chat_rows(30))
    target = tmp_path / "dpo.parquet"
    result = invoke_cli("select", str(out), "--min-confidence", "1", "--output", str(target))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"0 pairs written to {target} (conversational form)")
    assert pa.types.is_list(pq.read_schema(target).field("prompt").type)


def test_standard_form_refuses_chat_prompts(tmp_path):
    result, target = _select(tmp_path, _chat_rows(30), "--format", "standard")
    assert result.returncode == 2
    assert "its prompts are chat messages" in result.stderr and "--format conversational" in result.stderr
    assert not target.exists()
