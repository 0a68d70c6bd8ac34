"""The synthetic corpora must be learnable by how the audio was produced and by nothing else."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from spoofdet.data.corpora import prepare
from spoofdet.testing import synthetic


def _auc(values: np.ndarray, labels: np.ndarray) -> float:
    """P(value of a bona fide clip > value of a spoof clip)."""
    pos, neg = values[labels == 1], values[labels == 0]
    return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


def _features(x: np.ndarray) -> np.ndarray:
    logspec = np.log(np.abs(synthetic._stft(x.astype(np.float64))) ** 2 + 1e-10)
    bands = np.stack(
        [logspec[:, b].mean(1) for b in np.array_split(np.arange(logspec.shape[1]), 32)], 1
    )
    bands = bands[bands.mean(1) > np.median(bands.mean(1))]  # louder half of the frames
    return np.concatenate(
        [bands.mean(0) - bands.mean(), bands.std(0), np.abs(np.diff(bands, axis=0)).mean(0)]
    )


@pytest.fixture(scope="module")
def clips():
    rng = np.random.default_rng(123)
    out = []
    for i in range(160):
        label = i % 2
        seconds = rng.uniform(1.0, 6.0)
        method = synthetic.SPOOF_METHODS[(i // 2) % len(synthetic.SPOOF_METHODS)]
        x = (
            synthetic.bonafide_clip(rng, 16000, seconds)
            if label
            else synthetic.spoof_clip(rng, 16000, seconds, method)
        )
        out.append((label, x))
    return out


def test_clips_are_float32_finite_and_in_range(clips):
    for _, x in clips:
        assert x.dtype == np.float32 and np.isfinite(x).all() and np.abs(x).max() <= 1.0


def test_no_trivial_cue(clips):
    labels = np.array([lab for lab, _ in clips])
    length = np.array([len(x) for _, x in clips], dtype=float)
    rms = np.array([np.sqrt(np.mean(x.astype(np.float64) ** 2)) for _, x in clips])
    assert 0.3 < _auc(length, labels) < 0.7
    assert 0.3 < _auc(rms, labels) < 0.7


def test_classes_are_separable_by_production(clips):
    """A linear classifier on coarse spectral statistics beats chance clearly on held-out clips."""
    labels = np.array([lab for lab, _ in clips], dtype=float)
    feats = np.stack([_features(x) for _, x in clips])
    tr, te = slice(0, 100), slice(100, None)
    mu, sd = feats[tr].mean(0), feats[tr].std(0) + 1e-6
    z = (feats - mu) / sd
    w, b = np.zeros(z.shape[1]), 0.0
    for _ in range(2000):
        p = 1 / (1 + np.exp(-(z[tr] @ w + b)))
        g = p - labels[tr]
        w -= 0.05 * (z[tr].T @ g / len(g) + 1e-2 * w)
        b -= 0.05 * g.mean()
    acc = (((z[te] @ w + b) > 0) == labels[te]).mean()
    assert acc >= 0.75, acc


def test_unknown_method_and_small_split():
    with pytest.raises(ValueError, match="unknown spoof method"):
        synthetic.spoof_clip(np.random.default_rng(0), 16000, 1.0, "magic")
    with pytest.raises(ValueError, match="per_split"):
        synthetic.write_corpus("folder", "/nonexistent", per_split=1)


def test_same_seed_same_bytes(tmp_path):
    a = synthetic.write_corpus("in-the-wild", tmp_path / "a", per_split=3, seed=5)
    b = synthetic.write_corpus("in-the-wild", tmp_path / "b", per_split=3, seed=5)
    assert a["broken"] == b["broken"]
    for f in sorted((tmp_path / "a").iterdir()):
        if f.name != "SYNTHETIC.json":
            assert f.read_bytes() == (tmp_path / "b" / f.name).read_bytes(), f.name


@pytest.mark.parametrize("corpus", list(synthetic.LAYOUTS))
def test_every_file_decodes_except_the_broken_ones(synth, corpus):
    info = synth[corpus]
    saved = json.loads((Path(info["root"]) / "SYNTHETIC.json").read_text())
    assert saved["broken"] == info["broken"] and info["broken"], "every corpus carries broken files"
    m = prepare(corpus, info["root"])
    rates = {0: set(), 1: set()}
    for row in m.table.to_pylist():
        path, reason = Path(row["source_path"]), info["broken"].get(row["utt_id"])
        if reason == "missing_file":
            assert not path.exists()
        elif reason == "empty_file":
            assert path.stat().st_size == 0
        elif reason == "decode_error":
            with pytest.raises(sf.LibsndfileError):
                sf.read(path)
        elif reason == "too_short":
            assert sf.info(path).duration < 0.01
        elif reason == "non_finite":
            assert not np.isfinite(sf.read(path)[0]).all()
        else:
            assert reason is None
            x, sr = sf.read(path, dtype="float32")
            assert x.ndim == 1 and np.isfinite(x).all() and 0.99 <= len(x) / sr <= 6.01
            if row["label"] is not None:
                rates[row["label"]].add(sr)
    if corpus == "codecfake":  # mixed sample rates, drawn independently of the label
        assert len(rates[0]) >= 2 and len(rates[1]) >= 2 and rates[0] & rates[1]
    elif corpus.startswith("asvspoof") or corpus == "in-the-wild":
        assert rates[0] == rates[1] == {16000}
