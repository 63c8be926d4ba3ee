"""Weight files: only the public layout loads, nothing is unpickled, errors say what is wrong."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from conftest import PUBLIC_DECODER_CONVS, PUBLIC_VGG_CONVS, random_state_dict

from adain_cli import WeightsError
from adain_cli.weights import load_decoder, load_encoder, resolve_paths, weights_dir


def test_public_layout_files_load(weights):
    vgg, decoder = weights
    encoder = load_encoder(vgg)
    expected = random_state_dict(PUBLIC_VGG_CONVS, seed=1)["29.weight"]
    assert torch.equal(encoder.slices[-1][-2].weight, expected)
    assert torch.equal(load_decoder(decoder)[28].bias, random_state_dict(PUBLIC_DECODER_CONVS, seed=2)["28.bias"])


def test_missing_key_is_named(tmp_path: Path):
    state = random_state_dict(PUBLIC_DECODER_CONVS, seed=0)
    del state["14.weight"]
    torch.save(state, tmp_path / "d.pth")
    with pytest.raises(WeightsError, match=r"d\.pth: .*missing keys 14\.weight"):
        load_decoder(tmp_path / "d.pth")


def test_unexpected_key_is_named(tmp_path: Path):
    state = random_state_dict(PUBLIC_DECODER_CONVS, seed=0)
    state["module.extra"] = torch.zeros(1)
    torch.save(state, tmp_path / "d.pth")
    with pytest.raises(WeightsError, match="unexpected keys module.extra"):
        load_decoder(tmp_path / "d.pth")


def test_wrong_shape_is_named(tmp_path: Path):
    state = random_state_dict(PUBLIC_DECODER_CONVS, seed=0)
    state["28.weight"] = torch.zeros(3, 64, 1, 1)
    torch.save(state, tmp_path / "d.pth")
    with pytest.raises(WeightsError, match=r"28\.weight is \(3, 64, 1, 1\), expected \(3, 64, 3, 3\)"):
        load_decoder(tmp_path / "d.pth")


def test_decoder_file_given_as_vgg_is_refused(weights):
    with pytest.raises(WeightsError, match="decoder.pth: not the expected layout"):
        load_encoder(weights[1])


def test_non_finite_values_are_refused(tmp_path: Path):
    state = random_state_dict(PUBLIC_DECODER_CONVS, seed=0)
    state["1.bias"][0] = float("nan")
    torch.save(state, tmp_path / "d.pth")
    with pytest.raises(WeightsError, match=r"non-finite values in 1\.bias"):
        load_decoder(tmp_path / "d.pth")


class _RunsCode:
    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickle_that_runs_code_is_refused_and_nothing_runs(tmp_path: Path):
    marker = tmp_path / "pwned"
    evil = _RunsCode()
    evil.marker = str(marker)
    with open(tmp_path / "evil.pth", "wb") as handle:
        pickle.dump({"1.weight": evil}, handle)
    torch.save({"x": evil}, tmp_path / "evil2.pth")
    for name in ("evil.pth", "evil2.pth"):
        with pytest.raises(WeightsError, match=f"{name}: not a loadable weights file"):
            load_decoder(tmp_path / name)
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04garbage"])
def test_garbage_file_is_refused(tmp_path: Path, content: bytes):
    (tmp_path / "d.pth").write_bytes(content)
    with pytest.raises(WeightsError, match="d.pth: not a loadable weights file"):
        load_decoder(tmp_path / "d.pth")


def test_a_tensor_instead_of_a_state_dict_is_refused(tmp_path: Path):
    torch.save(torch.zeros(3), tmp_path / "d.pth")
    with pytest.raises(WeightsError, match="not a state dict"):
        load_decoder(tmp_path / "d.pth")


def test_given_path_that_does_not_exist(tmp_path: Path):
    with pytest.raises(WeightsError, match="weights file not found"):
        load_decoder(tmp_path / "nope.pth")


def test_weights_directory_follows_adain_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ADAIN_HOME", str(tmp_path))
    assert weights_dir() == tmp_path / "weights"


def test_missing_default_weights_name_the_command_that_gets_them(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("ADAIN_HOME", str(tmp_path))
    with pytest.raises(WeightsError, match="vgg_normalised.pth and decoder.pth not found.*adain download-weights"):
        resolve_paths()


def test_default_weights_are_found_in_the_weights_directory(weights_home: Path):
    assert resolve_paths() == (weights_home / "weights" / "vgg_normalised.pth",
                               weights_home / "weights" / "decoder.pth")
