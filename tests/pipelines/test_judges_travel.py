"""A judge is looked up by name only where the job starts; its profile travels with the
job. A profile registered with `register()` in a driver, and one an installed package
provides through the `magistrate.judges` entry-point group, judge end to end in a Ray job
and (the driver's) in the Serve app, over real HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pyarrow.dataset as pads
import pytest

from tests.conftest import EXAMPLES, free_port, run_cli

pytestmark = pytest.mark.engine

# Everything the profile is made of lives in the driver's own __main__: no actor or
# replica could import it, and none looks it up by name.
DRIVER = textwrap.dedent('''
    import json, sys

    import requests
    from ray import serve

    from magistrate.judges import FormatTemplate, JudgeProfile, Reading, register
    from magistrate.pipelines.judge_job import JobSettings, run
    from magistrate.serve.app import ServeArgs, judge_app

    def read(text):
        return Reading("A" if "A" in text else "B" if "B" in text else None)

    register(JudgeProfile(
        name="driver-judge", version=7, description="registered in the driver only",
        user_template=FormatTemplate("Q: {question}\\nA: {answer_a}\\nB: {answer_b}\\nBetter? [[A]] or [[B]]"),
        read=read, default_mode="logprob"))

    source, output, port, model = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    engine = dict(model=model, max_model_len=2048, gpu_memory_utilization=0.2)
    summary = run(JobSettings(input=source, output=output, judge="driver-judge", order="ab", limit=2,
                              **engine), progress=lambda message: None)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(judge_app(ServeArgs(judge="driver-judge", order="ab", **engine)), name="driver", route_prefix="/")
    pair = {"id": "q1", "prompt": "What is 2 + 2?", "response_a": "4.", "response_b": "5."}
    answer = requests.post(f"http://127.0.0.1:{port}/v1/judge", json=pair, timeout=600)
    print(json.dumps({"complete": summary["complete"], "status": answer.status_code, "answer": answer.json()}))
    serve.shutdown()
''')


def test_a_judge_registered_in_the_driver_judges_in_a_ray_job_and_in_serve(tmp_path, tiny_model):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(driver), str(EXAMPLES / "llmbar-demo.jsonl"), str(out),
                           str(free_port()), tiny_model], capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["complete"]
    rows = pads.dataset(str(out / "verdicts"), format="parquet").to_table().to_pylist()
    assert len(rows) == 2
    assert {(r["judge"], r["judge_version"], r["mode"]) for r in rows} == {("driver-judge", 7, "logprob")}
    assert all(r["winner"] in {"A", "B", "tie"} for r in rows), [r["error"] for r in rows]
    assert result["status"] == 200, result["answer"]
    answer = result["answer"]
    assert (answer["judge"], answer["judge_version"], answer["mode"]) == ("driver-judge", 7, "logprob")
    assert answer["winner"] in {"A", "B", "tie"}, answer["error"]


def test_a_judge_from_an_installed_package_is_listed_and_judges(tmp_path, tiny_model):
    """tests/plugins/judge_plugin, installed in the test venv by `make test`."""
    listed = run_cli("judges", "list")
    assert listed.returncode == 0 and "plugin-test-judge" in listed.stdout, listed.stdout
    out = tmp_path / "out"
    done = run_cli("judge", "--input", str(EXAMPLES / "llmbar-demo.jsonl"), "--output", str(out),
                   "--judge", "plugin-test-judge", "--order", "ab", "--limit", "2", "--model", tiny_model,
                   "--max-model-len", "2048", "--gpu-memory-utilization", "0.2")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = pads.dataset(str(out / "verdicts"), format="parquet").to_table().to_pylist()
    assert {(r["judge"], r["judge_version"]) for r in rows} == {("plugin-test-judge", 3)}
    assert len(rows) == 2 and all(r["winner"] in {"A", "B", "tie"} for r in rows), [r["error"] for r in rows]
