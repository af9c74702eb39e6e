"""Every shipped judge text is pinned: its sha256 and the upstream commit it was read at,
here and in texts/SOURCES.md, so a text cannot drift from its source unnoticed (the tie
texts once lagged FastChat main by a word)."""

from __future__ import annotations

import hashlib
import re
from importlib.resources import files

TEXTS = files("magistrate.judges") / "texts"
REWARD_BENCH = "05a9005efb607249822c193590c8ecab87c77052"
FASTCHAT = "0e6d3e4beaab66f4d3f93db72541a4abab8af28d"
PINS = {  # file -> (sha256, upstream repository, commit)
    "mt_bench.system.txt": ("c3fbb61119533727d0d82252b8b3201a9bbcfc7ca0d5eb1a0dfc85266d4a6c00", "allenai/reward-bench", REWARD_BENCH),
    "mt_bench.user.txt": ("22f93e573bf9343e52c3dd0a36b1a033a47a6dc0045ab3d40357da8d3c613d57", "allenai/reward-bench", REWARD_BENCH),
    "mt_bench.multi.system.txt": ("4a39e7ba8e571456edd995fff0a3ae016a10e97f00018b60c54577016df9869d", "allenai/reward-bench", REWARD_BENCH),
    "mt_bench.multi.user.txt": ("a962ad885e77f79a229c88cff6fe258f829ceed6188370743217032f3c8d8ca9", "allenai/reward-bench", REWARD_BENCH),
    "mt_bench_tie.system.txt": ("8d6df8feee26e1c9994a4fae884fc839bfcb1787a3a9522d1be611db68c93338", "lm-sys/FastChat", FASTCHAT),
    "mt_bench_tie.multi.system.txt": ("af4a7431af51d6d7807be08b8093e6eb4975bf790d1a1086decd9d0e39eac7fc", "lm-sys/FastChat", FASTCHAT),
    "skywork_critic.user.txt": ("1d8ecd80d62c7ecbba1cb8fef4212f6184bc231d6cb8a21407bbb749d26a5a56", "ScalerLab/JudgeBench",
                                "e2c52c284e735e139b3daa61c206ee208f36c461"),
    "con_j.user.txt": ("c56bb922c2d98ec2236fd8df021b9a36c1bc228c62fb1a1e0d52b845fad5b756", "allenai/reward-bench", REWARD_BENCH),
}


def test_every_shipped_text_is_pinned_and_unchanged():
    shipped = {p.name for p in TEXTS.iterdir() if p.name.endswith(".txt")}
    assert shipped == set(PINS)
    for name, (digest, _, _) in PINS.items():
        assert hashlib.sha256((TEXTS / name).read_bytes()).hexdigest() == digest, name


def test_sources_md_names_the_same_file_hash_repository_and_commit():
    rows = {}
    for line in (TEXTS / "SOURCES.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].endswith(".txt"):
            rows[cells[0]] = cells
    assert set(rows) == set(PINS)
    for name, (digest, repository, commit) in PINS.items():
        _, sha, repo, path, named = rows[name]
        assert (sha, repo, named) == (digest, repository, commit), name
        assert re.fullmatch(r"[0-9a-f]{40}", named) and path, name


def test_the_tie_texts_follow_fastchat_main():
    for name in ("mt_bench_tie.system.txt", "mt_bench_tie.multi.system.txt"):
        text = (TEXTS / name).read_text(encoding="utf-8")
        assert "Avoid any position biases" in text and "positional" not in text
