"""Reading whole pickled modules (torch.save(model)) without running anything from the file."""

import io
import os
import sys
import zipfile

import pytest
import torch
from conftest import published_checkpoint
from torch import nn

from spoofdet.models.safe_unpickle import PickleRefused, read_pickled_module
from spoofdet.models.seeds import SeedCheckpointError, read_seed_checkpoint


class Block(nn.Module):
    """Nested modules, a parameter-free child, a None parameter, a non-persistent buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.act = nn.SELU()
        self.bn = nn.BatchNorm2d(4)
        self.stack = nn.Sequential(nn.Linear(3, 2, bias=False), nn.BatchNorm1d(2, affine=False))
        self.scale = nn.Parameter(torch.randn(1, 2, 5))
        self.register_buffer("table", torch.arange(6, dtype=torch.int32).reshape(2, 3))
        self.register_buffer("scratch", torch.ones(4), persistent=False)
        self.where = torch.device("cpu")  # pickled as a call of torch.device (allowed, inert)
        self.enc_dim = 256


def _filled() -> Block:
    torch.manual_seed(0)
    m = Block()
    m.bn.running_mean.normal_()
    m.bn.num_batches_tracked += 7
    m.stack[1].running_var.uniform_(0.5, 2)
    return m


def _same(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for k in b:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("wrap", [False, True], ids=["module", "DataParallel"])
def test_a_pickled_module_reads_back_as_its_state_dict(tmp_path, wrap):
    model = _filled()
    if wrap:
        model = nn.DataParallel(model)  # CPU: no devices, only the 'module.' wrapper
    path = tmp_path / "anti-spoofing_feat_model.pt"
    torch.save(model, path)
    top = {n.split("/")[0] for n in zipfile.ZipFile(path).namelist()}
    assert top == {"anti-spoofing_feat_model"}
    sd = read_pickled_module(path)
    _same(sd, model.state_dict())
    assert "scratch" not in "".join(sd) and all(k.startswith("module.") for k in sd) == wrap
    # torch.load(weights_only=True) refuses the file; read_seed_checkpoint falls back to the reader
    _same(read_seed_checkpoint(path), model.state_dict())


def test_the_archive_top_folder_is_read_too(tmp_path):
    model = _filled()
    buf = io.BytesIO()
    torch.save(model, buf)  # a buffer has no name: torch writes the top folder 'archive/'
    path = tmp_path / "x.pt"
    path.write_bytes(buf.getvalue())
    assert {n.split("/")[0] for n in zipfile.ZipFile(path).namelist()} == {"archive"}
    _same(read_pickled_module(path), model.state_dict())


def test_a_plain_state_dict_pickle_is_returned_as_is(tmp_path):
    sd = _filled().state_dict()
    torch.save(sd, tmp_path / "sd.pt")
    _same(read_pickled_module(tmp_path / "sd.pt"), sd)


class RunsAShell:
    """Unpickling this with pickle/torch.load(weights_only=False) would run a shell command."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class Evaluates:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return eval, (f"open({self.marker!r}, 'w').close()",)


@pytest.mark.parametrize(
    "payload, global_name", [(RunsAShell, "system"), (Evaluates, "builtins.eval")]
)
def test_a_hostile_pickle_is_refused_and_never_runs(tmp_path, payload, global_name):
    marker = tmp_path / "pwned"
    model = _filled()
    model.payload = payload(str(marker))  # hidden in an attribute of an ordinary module
    path = tmp_path / "anti-spoofing_feat_model.pt"
    torch.save(model, path)
    assert not marker.exists()
    with pytest.raises(PickleRefused, match=global_name) as info:
        read_pickled_module(path)
    assert "not executed" in str(info.value)
    with pytest.raises(SeedCheckpointError, match=global_name):
        read_seed_checkpoint(path)
    assert not marker.exists()


def test_files_that_are_not_torch_zips_are_refused(tmp_path):
    bad = tmp_path / "legacy.pt"
    bad.write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(PickleRefused, match="not a torch.save zip"):
        read_pickled_module(bad)


def test_the_file_classes_are_never_imported():
    path = published_checkpoint("codecfake_codec_mellcnn.pt")
    assert "model" not in sys.modules
    sd = read_pickled_module(path)
    assert "model" not in sys.modules  # the file names model.LCNN; it stayed a placeholder
    assert len(sd) == 42 and sd["out.1.weight"].shape == (160, 4960)
