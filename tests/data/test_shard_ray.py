"""The shard job on a local Ray (Ray Data tasks), on a generated corpus in every real layout."""

import pyarrow.parquet as pq
import pytest

import spoofdet.data.shard_writer as shard
from spoofdet.data.corpora import prepare

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.parametrize(
    "corpus", ["asvspoof2019-la", "asvspoof2021-la", "asvspoof2021-df", "in-the-wild", "codecfake"]
)
def test_prepare_each_layout_with_ray(local_ray, synth, tmp_path, corpus):
    info = synth[corpus]
    table = prepare(corpus, info["root"]).table
    s = shard.run(table, str(tmp_path / "out"), corpus=corpus, shard_rows=6, executor="ray")
    assert s["rows_in"] == s["rows_written"] + s["quarantined"] == info["rows"]
    q = pq.read_table(tmp_path / "out" / "quarantine.parquet")
    assert (
        dict(zip(q.column("utt_id").to_pylist(), q.column("reason").to_pylist())) == info["broken"]
    )
    # Ray and the single-process path write the same rows
    ref = shard.run(table, str(tmp_path / "ref"), corpus=corpus, shard_rows=6, executor="local")
    assert (
        pq.read_table(tmp_path / "out" / "metadata.parquet")
        .sort_by("utt_id")
        .equals(pq.read_table(tmp_path / "ref" / "metadata.parquet").sort_by("utt_id"))
    )
    assert ref["rows_written"] == s["rows_written"]
