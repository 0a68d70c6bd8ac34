import json

import pyarrow.parquet as pq
import pytest

from ray_jobs import demo


@pytest.mark.integration
def test_demo_runs_end_to_end(tmp_path, capsys):
    assert demo.main(["--out", str(tmp_path), "--per-split", "4", "--num-cpus", "2", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary["corpora"]) == set(demo.DEMO_CORPORA)
    for name, s in summary["corpora"].items():
        assert pq.read_table(s["out"]).num_rows == s["rows"] > 0
        assert s["missing_audio"] == sum(r == "missing_file" for r in s["deliberately_broken"].values())
        sh = summary["shards"][name]
        assert sh["rows_in"] == s["rows"] == sh["rows_written"] + sh["quarantined"]
        assert sh["quarantined"] == len(s["deliberately_broken"])
        assert pq.read_table(f"{sh['out']}/metadata.parquet").num_rows == sh["rows_written"]
