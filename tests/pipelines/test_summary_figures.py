"""The summary's judging figures, from verdict rows made by hand: agreement over decided
pairs beside the tie share, the order-averaged p_a's agreement, the position bias, and
the note the table adds for the embedded judge."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from magistrate.pipelines.sources import locate
from magistrate.pipelines.summary import summarise, summary_table
from magistrate.pipelines.units import verdicts_dir

# winner, p_a, ab_verdict, ba_verdict (original frame), label
ROWS = [
    ("A", 0.8, "A", "A", "A"),    # decided, agrees; ab picks the first slot, ba the second
    ("B", 0.3, "B", "B", "A"),    # decided, disagrees; ab second, ba first
    ("tie", 0.6, "A", "B", "A"),  # a tie; both orders pick the first slot; p_a leans to A: agrees
    ("tie", 0.5, "A", "B", "B"),  # a tie; first slot twice; p_a leans nowhere
    ("error", None, None, None, "A"),
]


def test_decided_agreement_ties_p_a_agreement_and_position_bias(tmp_path):
    out = locate(str(tmp_path))
    folder = tmp_path / verdicts_dir(out).rsplit("/", 1)[-1]
    folder.mkdir(parents=True)
    names = ("winner", "p_a", "ab_verdict", "ba_verdict", "label")
    table = pa.table({n: [r[i] for r in ROWS] for i, n in enumerate(names)})
    table = table.append_column("consistent", pa.array([True, True, False, False, None]))
    table = table.append_column("error", pa.array([None, None, None, None, "order ab: boom"]))
    pq.write_table(table, folder / "unit-1.parquet")

    summary = summarise(out, 1.0)
    assert summary["decided_agreement"] == 0.5 and summary["decided_pairs"] == 2
    assert summary["tie_share"] == 0.5  # of the 4 judged pairs
    assert summary["label_agreement"] == 0.25  # a tie counts as a miss
    assert summary["p_a_agreement"] == 2 / 3 and summary["p_a_pairs"] == 3
    assert summary["position_bias"] == 6 / 8 and summary["decisive_orders"] == 8

    assert "note" not in summary_table(summary)
    table_text = summary_table({**summary, "embedded_judge": True})
    assert "over decided pairs         50.0% of 2; ties 50.0% of judged pairs" in table_text
    assert "position bias" in table_text and "75.0% of 8" in table_text
    assert table_text.splitlines()[-1].split()[:2] == ["note", "the"]
