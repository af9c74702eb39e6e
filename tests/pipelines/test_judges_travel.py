"""A judge is looked up by name only where the job starts; its profile travels with the
job. A profile registered with `register()` in a driver judges end to end in a Ray job
and in the Serve app (over real HTTP), and so does one an installed package provides
through the `magistrate.judges` entry-point group (tests/plugins/judge_plugin, which
`make test` installs). One driver process runs all three, on the tiny judge."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pyarrow.dataset as pads
import pytest

from tests.conftest import EXAMPLES, free_port, run_cli

pytestmark = pytest.mark.engine

# Everything the driver's profile is made of lives in its own __main__: no actor or
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

    source, out, port, model, result = sys.argv[1:6]
    engine = dict(model=model, max_model_len=2048, gpu_memory_utilization=0.2)
    quiet = lambda message: None
    jobs = {name: run(JobSettings(input=source, output=f"{out}/{name}", judge=name, order="ab", limit=2, **engine),
                      progress=quiet)["complete"]
            for name in ("driver-judge", "plugin-test-judge")}
    serve.start(http_options={"host": "127.0.0.1", "port": int(port)})
    serve.run(judge_app(ServeArgs(judge="driver-judge", order="ab", **engine)), name="driver", route_prefix="/")
    pair = {"id": "q1", "prompt": "What is 2 + 2?", "response_a": "4.", "response_b": "5."}
    answer = requests.post(f"http://127.0.0.1:{port}/v1/judge", json=pair, timeout=600)
    with open(result, "w") as f:  # not stdout: Ray's workers print there too
        json.dump({"jobs": jobs, "status": answer.status_code, "answer": answer.json()}, f)
    serve.shutdown()
''')


def _rows(out) -> list[dict]:
    return pads.dataset(str(out / "verdicts"), format="parquet").to_table().to_pylist()


def test_registered_and_installed_judges_judge_in_ray_jobs_and_in_serve(tmp_path, tiny_model):
    listed = run_cli("judges", "list")
    assert listed.returncode == 0 and "plugin-test-judge" in listed.stdout, listed.stdout
    driver, out, result = tmp_path / "driver.py", tmp_path / "out", tmp_path / "result.json"
    driver.write_text(DRIVER)
    done = subprocess.run([sys.executable, str(driver), str(EXAMPLES / "llmbar-demo.jsonl"), str(out),
                           str(free_port()), tiny_model, str(result)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    outcome = json.loads(result.read_text())
    assert outcome["jobs"] == {"driver-judge": True, "plugin-test-judge": True}
    first_two = [json.loads(line)["id"] for line in open(EXAMPLES / "llmbar-demo.jsonl")][:2]
    for name, version in (("driver-judge", 7), ("plugin-test-judge", 3)):
        rows = _rows(out / name)
        assert sorted(r["id"] for r in rows) == sorted(first_two)  # --limit 2: the first two pairs
        assert {(r["judge"], r["judge_version"], r["mode"]) for r in rows} == {(name, version, "logprob")}
        assert all(r["winner"] in {"A", "B", "tie"} for r in rows), [r["error"] for r in rows]
        assert all(0 <= r["ab_p_a"] <= 1 and r["ba_p_a"] is None for r in rows)  # order "ab" only
        summary = json.loads((out / name / "summary.json").read_text())
        assert summary["complete"] and summary["pairs"] == 2
    assert outcome["status"] == 200, outcome["answer"]
    answer = outcome["answer"]
    assert (answer["judge"], answer["judge_version"], answer["mode"]) == ("driver-judge", 7, "logprob")
    assert answer["id"] == "q1" and set(answer["orders"]) == {"ab"}
    assert answer["winner"] in {"A", "B", "tie"}, answer["error"]
    assert 0 <= answer["orders"]["ab"]["p_a"] <= 1 and answer["orders"]["ab"]["prompt_tokens"] > 0
