"""store.staged_file + store.publish_file: a file built off to the side on local disk and
stored in one step, whole or not at all, locally and on the S3 server (moto on 127.0.0.1,
through s3fs as on AWS)."""

from __future__ import annotations

import os
import uuid

import pytest

from magistrate.pipelines.sources import locate
from magistrate.pipelines.store import AlreadyExists, publish_file, staged_file
from tests.pipelines.test_commit import BUCKET, bucket  # noqa: F401 (a fixture: moto's bucket, fake credentials)


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def test_locally_it_is_built_hidden_beside_the_target_and_renamed_over_it(tmp_path):
    loc = locate(str(tmp_path / "sets"))
    target = f"{loc.path}/train.parquet"
    with staged_file(loc, target) as staging:
        assert os.path.dirname(staging) == loc.path and os.path.basename(staging).startswith(".")
        _write(staging, b"first")
        assert not os.path.exists(target)  # nothing under the name until published
        publish_file(loc, staging, target)
    assert open(target, "rb").read() == b"first" and os.listdir(loc.path) == ["train.parquet"]

    with staged_file(loc, target) as staging:
        _write(staging, b"second")
        with pytest.raises(AlreadyExists):
            publish_file(loc, staging, target, overwrite=False)
    assert open(target, "rb").read() == b"first" and os.listdir(loc.path) == ["train.parquet"]

    with staged_file(loc, target) as staging:
        _write(staging, b"second")
        publish_file(loc, staging, target, overwrite=True)
    assert open(target, "rb").read() == b"second" and os.listdir(loc.path) == ["train.parquet"]


def test_a_failure_while_building_leaves_nothing_and_the_earlier_file(tmp_path):
    loc = locate(str(tmp_path))
    target = f"{loc.path}/train.parquet"
    _write(target, b"earlier")
    with pytest.raises(KeyboardInterrupt), staged_file(loc, target) as staging:
        _write(staging, b"half")
        raise KeyboardInterrupt
    assert open(target, "rb").read() == b"earlier" and os.listdir(loc.path) == ["train.parquet"]


def test_on_s3_one_upload_of_the_finished_file(bucket, moto_url, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)  # $TMPDIR read again
    loc = locate(f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}", moto_url)
    key = f"{loc.path.split('/', 1)[1]}/train.parquet"
    target = f"{loc.path}/train.parquet"
    with staged_file(loc, target) as staging:
        assert os.path.dirname(staging) == str(tmp_path)
        _write(staging, b"first")
        publish_file(loc, staging, target)
    assert bucket.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"first"
    with staged_file(loc, target) as staging:
        _write(staging, b"second")
        with pytest.raises(AlreadyExists):
            publish_file(loc, staging, target, overwrite=False)
    assert bucket.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"first"
    assert os.listdir(tmp_path) == []


def test_on_s3_a_multipart_upload_that_fails_leaves_no_object(bucket, moto_url, tmp_path, monkeypatch):
    """Past s3fs's size for one PUT the upload is multipart; a part that fails aborts it,
    and S3 shows no object (and keeps no upload) for it."""
    import s3fs.core

    monkeypatch.setattr(s3fs.core, "calculate_chunksize", lambda size, chunksize=None, **_: 5 * 2**20)
    loc = locate(f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}", moto_url)
    key = f"{loc.path.split('/', 1)[1]}/big.parquet"
    call = loc.s3._call_s3
    parts = []

    async def failing_second_part(method, *args, **kwargs):
        if method == "upload_part":
            parts.append(kwargs["PartNumber"])
            if kwargs["PartNumber"] == 2:
                raise OSError("the connection dropped")
        return await call(method, *args, **kwargs)

    monkeypatch.setattr(loc.s3, "_call_s3", failing_second_part)
    with pytest.raises(OSError, match="connection dropped"), staged_file(loc, f"{loc.path}/big.parquet") as staging:
        _write(staging, os.urandom(12 * 2**20))
        publish_file(loc, staging, f"{loc.path}/big.parquet")
    assert 2 in parts
    assert "Contents" not in bucket.list_objects_v2(Bucket=BUCKET, Prefix=key)
    assert not [u for u in bucket.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) if u["Key"] == key]
