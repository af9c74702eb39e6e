"""An S3 input in a bucket that keeps versions is read at the version the run recorded
(sharding.input_identities): overwritten after planning, every read (footer, cut, unit)
still gives the planned rows. On the S3 server (moto on 127.0.0.1, through s3fs)."""

from __future__ import annotations

import io
import json
import uuid

import pyarrow as pa
import pyarrow.parquet as pq

from magistrate.pipelines.prepare import prepare_unit
from magistrate.pipelines.sharding import input_identities, shard, version_in
from magistrate.pipelines.sources import list_input_files, locate
from tests.pipelines.test_commit import bucket  # noqa: F401 (a fixture: moto's bucket, fake credentials)

ROWS = 30
UNIT_ROWS = 8  # the Parquet file's one row group of 30 rows is cut and staged


def _pairs(tag: str) -> list[dict]:
    return [{"prompt": f"{tag} prompt {i}", "response_a": f"{tag} a {i}", "response_b": f"{tag} b {i}"}
            for i in range(ROWS)]


def _put(client, name: str, tag: str) -> None:
    jsonl = "".join(json.dumps(p) + "\n" for p in _pairs(f"{tag} jsonl")).encode()
    client.put_object(Bucket=name, Key="in/pairs.jsonl", Body=jsonl)
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(_pairs(f"{tag} parquet")), buffer, row_group_size=ROWS)
    client.put_object(Bucket=name, Key="in/pairs.parquet", Body=buffer.getvalue())


def test_an_input_overwritten_in_a_versioned_bucket_is_read_as_planned(bucket, moto_url, tmp_path):  # noqa: F811
    name = f"versioned-{uuid.uuid4().hex[:8]}"
    bucket.create_bucket(Bucket=name)
    bucket.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    _put(bucket, name, "planned")
    src = locate(f"s3://{name}/in", moto_url)
    files = list_input_files(src)
    identities = input_identities(src, files)
    assert all(version_in(identity) for identity in identities.values()), identities

    _put(bucket, name, "overwritten")  # after the run recorded the versions, before it reads
    assert input_identities(src, files) != identities  # a resume would be refused

    staging = locate(str(tmp_path / "staging"))
    units = shard(src, files, UNIT_ROWS, staging, identities=identities)
    assert {u.kind for u in units} == {"json", "parquet"}
    assert any(u.staged for u in units)  # the cut read the file too, not only the units
    prompts = [p for unit in units
               for p in prepare_unit(src, unit, {}, "standard", staging=staging).column("prompt").to_pylist()]
    planned = [p["prompt"] for tag in ("planned jsonl", "planned parquet") for p in _pairs(tag)]
    assert sorted(prompts) == sorted(planned)
