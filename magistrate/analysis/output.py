"""Opening what `magistrate judge` wrote (local or s3://) for analysis, streamed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import pyarrow.dataset as pads

from magistrate.pipelines import InputError, Location, locate, read_summary, verdict_dataset, verdict_files


@dataclass(frozen=True)
class Verdicts:
    loc: Location
    dataset: pads.Dataset
    summary: dict | None  # summary.json, when the run wrote one

    @property
    def columns(self) -> list[str]:
        return self.dataset.schema.names

    def require(self, columns: tuple[str, ...], purpose: str) -> None:
        missing = [c for c in columns if c not in self.columns]
        if missing:
            raise InputError(f"{self.loc.uri}: {purpose} needs column(s) {', '.join(missing)}, "
                             f"which the verdicts do not have")

    def batches(self, columns: tuple[str, ...]) -> Iterator[dict[str, list]]:
        """Batches as dicts of lists; a column the verdicts lack reads as all nulls."""
        present = [c for c in columns if c in self.columns]
        for batch in self.dataset.to_batches(columns=present):
            rows = batch.to_pydict()
            for c in columns:
                rows.setdefault(c, [None] * batch.num_rows)
            yield rows


def open_verdicts(uri: str, endpoint_url: str | None = None) -> Verdicts:
    loc = locate(uri, endpoint_url)
    files = verdict_files(loc)
    if not files:
        raise InputError(f"{uri}: no verdicts here (expected {uri.rstrip('/')}/verdicts/*.parquet, "
                         "as `magistrate judge --output` writes)")
    dataset = verdict_dataset(loc, files)
    if "winner" not in dataset.schema.names:
        raise InputError(f"{uri}: the files in verdicts/ have no winner column; not a magistrate output")
    return Verdicts(loc, dataset, read_summary(loc))
