"""One error type for bad input (SpoofdetError, a ValueError) and one problem collector."""

import pytest

from spoofdet.config import ConfigError, load_train_config
from spoofdet.data.corpora import ManifestError, prepare
from spoofdet.errors import Problems, SpoofdetError
from spoofdet.evaluation.scorefile import ScoreFileError, read_scores


def test_problems_keep_the_first_and_count_all():
    p = Problems(limit=2)
    assert not p
    for i in range(5):
        p.add("key.txt", i + 1, f"bad {i}")
    assert p and p.total == 5 and list(p) == ["key.txt:1: bad 0", "key.txt:2: bad 1"]
    assert p.listing() == "key.txt:1: bad 0\n  key.txt:2: bad 1\n  ... and 3 more"
    everything = Problems()
    everything.extend(["a", "b"])
    assert len(everything) == 2 and everything.listing(limit=1) == "a\n  ... and 1 more"


def test_every_bad_input_error_is_a_spoofdet_error_listing_its_problems(tmp_path):
    (tmp_path / "ASVspoof2019_LA_cm_protocols").mkdir()
    protocol = tmp_path / "ASVspoof2019_LA_cm_protocols" / "ASVspoof2019.LA.cm.train.trn.txt"
    protocol.write_text("LA_0079 LA_T_1 - - bonafide\nLA_0079 LA_T_2 - - maybe\nonly three cols\n")
    with pytest.raises(ManifestError) as exc:
        prepare("asvspoof2019-la", tmp_path, "train", check_audio=False)
    assert isinstance(exc.value, SpoofdetError) and isinstance(exc.value, ValueError)
    assert len(exc.value.problems) == 2 and all(str(protocol) in p for p in exc.value.problems)

    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\noptim: {lr: -1}\ntrain: {epochs: 0}\n")
    with pytest.raises(ConfigError) as exc:
        load_train_config(recipe, check_paths=False)
    assert isinstance(exc.value, SpoofdetError) and len(exc.value.problems) >= 2

    scores = tmp_path / "scores.txt"
    scores.write_text("a 1.0\nb nan\nc\n")
    with pytest.raises(ScoreFileError) as exc:
        read_scores(scores)
    assert isinstance(exc.value, SpoofdetError) and len(exc.value.problems) == 2


def test_library_errors_share_the_type():
    from spoofdet.data import DataError
    from spoofdet.data.audio import AudioError
    from spoofdet.data.features import FeatureError
    from spoofdet.evaluation.calibration import CalibrationError
    from spoofdet.models.safe_unpickle import PickleRefused
    from spoofdet.models.seeds import SeedCheckpointError
    from spoofdet.serve.importer import SeedImportError
    from spoofdet.serve.registry import ModelRefError

    for cls in (
        DataError,
        AudioError,
        FeatureError,
        CalibrationError,
        PickleRefused,
        SeedCheckpointError,
        SeedImportError,
        ModelRefError,
    ):
        assert issubclass(cls, SpoofdetError), cls
