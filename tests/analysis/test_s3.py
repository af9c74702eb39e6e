"""The analysis commands over an output on S3: a moto server on 127.0.0.1 (tests/conftest.py),
reached through s3fs as on AWS."""

from __future__ import annotations

import io
import json

import pyarrow.parquet as pq

from tests.analysis.conftest import SUMMARY, synthetic_rows, write_output
from tests.analysis.expected import expected_figures
from tests.conftest import invoke_cli, s3_client

BUCKET = "magistrate-analysis-test"


def test_report_and_select_on_s3(tmp_path, moto_url, aws_env):  
    rows = synthetic_rows(90)
    local = write_output(tmp_path / "out", rows, summary=SUMMARY)
    client = s3_client(moto_url)
    client.create_bucket(Bucket=BUCKET)
    for path in local.rglob("*"):
        if path.is_file():
            client.upload_file(str(path), BUCKET, f"run/{path.relative_to(local)}")

    endpoint = ["--s3-endpoint-url", moto_url]
    result = invoke_cli("report", f"s3://{BUCKET}/run", "--json", *endpoint, env=aws_env)
    assert result.returncode == 0, result.stderr
    fig = json.loads(result.stdout)
    want = expected_figures(rows)
    assert fig["winners"] == want["winners"] and fig["throughput"]["seconds"] == SUMMARY["seconds"]
    page = client.get_object(Bucket=BUCKET, Key="run/report.html")["Body"].read().decode()
    assert 'id="plot-histogram"' in page

    result = invoke_cli("select", f"s3://{BUCKET}/run", "--min-confidence", "0",
                     "--output", f"s3://{BUCKET}/dpo/train.parquet", *endpoint, env=aws_env)
    assert result.returncode == 0, result.stderr
    body = client.get_object(Bucket=BUCKET, Key="dpo/train.parquet")["Body"].read()
    table = pq.read_table(io.BytesIO(body))
    assert table.column_names[:4] == ["id", "prompt", "chosen", "rejected"]
    assert table.num_rows == sum(r.get("winner") in ("A", "B") for r in rows)

    result = invoke_cli("report", f"s3://{BUCKET}/nothing", *endpoint, env=aws_env)
    assert result.returncode == 2 and "no verdicts here" in result.stderr
