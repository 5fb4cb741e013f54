"""Pretrained encoder weights for training: a local file, a URL and ``imagenet`` served by
a model hub on 127.0.0.1 (never the internet), through the download cache; a 3-band
first layer adapted to 4 bands as timm and TorchGeo do."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli

import geoseg
from geoseg.errors import ModelError

ENCODER = "tu-mobilenetv3_small_100"


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    """ImageNet-shaped weights of the encoder made here: timm's network for 3 bands,
    seeded, saved as safetensors as the model hub holds them."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(1)
    network = timm.create_model("mobilenetv3_small_100", pretrained=False, in_chans=3)
    path = tmp_path / "hub" / "timm" / "mobilenetv3_small_100.lamb_in1k" / "resolve" / "main"
    path.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in network.state_dict().items()},
              str(path / "model.safetensors"))
    return path / "model.safetensors"


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[str]:
    """A plain HTTP server on 127.0.0.1 serving ``tmp_path/hub`` (a model hub's layout)."""
    server = subprocess.Popen([sys.executable, "-u", "-m", "http.server", "--bind", "127.0.0.1",
                               "--directory", str(tmp_path / "hub"), "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert server.stdout is not None
    port = re.search(r"port (\d+)", server.stdout.readline()).group(1)  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    server.kill()
    server.wait()


def spec(bands: int = 4):  # type: ignore[no-untyped-def]
    from geoseg.model import ClassInfo, ModelSpec

    return ModelSpec(name="m", bands=tuple(f"b{i}" for i in range(bands)), mean=(0.0,) * bands,
                     std=(1.0,) * bands, classes=(ClassInfo("a", (0, 0, 0)),
                                                  ClassInfo("b", (9, 9, 9))),
                     encoder=ENCODER, encoder_depth=3, decoder_channels=(64, 32, 16))


def test_a_weights_file_loads_into_a_4_band_encoder_with_its_first_layer_adapted(weights):
    from safetensors.torch import load_file

    from geoseg import encoders
    from geoseg.model import build_network

    network = build_network(spec(4))
    loaded = encoders.load_encoder(network, weights, str(weights))
    assert loaded["adapted"] == 1 and loaded["matched"] == loaded["of"]
    saved = load_file(str(weights))
    state = network.encoder.model.state_dict()
    rgb = saved["conv_stem.weight"]
    np.testing.assert_allclose(state["conv_stem.weight"].numpy(),
                               torch.cat([rgb, rgb[:, :1]], dim=1).numpy() * 3 / 4, rtol=1e-6)
    assert torch.equal(state["blocks.1.0.conv_pw.weight"], saved["blocks.1.0.conv_pw.weight"])
    # One band: the RGB filters summed.
    one = build_network(spec(1))
    encoders.load_encoder(one, weights, str(weights))
    np.testing.assert_allclose(one.encoder.model.state_dict()["conv_stem.weight"].numpy(),
                               rgb.sum(dim=1, keepdim=True).numpy(), rtol=1e-5)


def test_weights_of_another_encoder_or_no_weights_are_one_line_errors(tmp_path):
    import timm
    from safetensors.torch import save_file

    from geoseg import encoders
    from geoseg.model import build_network

    other = tmp_path / "resnet18.safetensors"
    save_file(timm.create_model("resnet18", pretrained=False).state_dict(), str(other))
    with pytest.raises(ModelError, match=r"fits the MobileNetV3Features encoder in \d of its 240"):
        encoders.load_encoder(build_network(spec()), other, str(other))
    notes = tmp_path / "notes.pth"
    notes.write_text("not weights")
    with pytest.raises(ModelError, match=r"notes\.pth: is not a weights file"):
        encoders.read_state(notes)


def test_imagenet_and_urls_come_through_the_cache_and_work_offline(weights, hub, tmp_path,
                                                                  monkeypatch):
    from geoseg import encoders

    monkeypatch.setenv("GEOSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_ENDPOINT", hub)
    assert encoders.reference(ENCODER, "imagenet") == (
        "hf://timm/mobilenetv3_small_100.lamb_in1k/model.safetensors")
    path, _ = encoders.fetch(ENCODER, "imagenet")
    assert path.read_bytes() == weights.read_bytes() and str(tmp_path / "cache") in str(path)
    url = f"{hub}/timm/mobilenetv3_small_100.lamb_in1k/resolve/main/model.safetensors"
    by_url, _ = encoders.fetch(ENCODER, url)
    assert by_url.read_bytes() == weights.read_bytes()
    weights.unlink()  # the hub loses it: the cache still has it
    assert encoders.fetch(ENCODER, "imagenet")[0] == path


@pytest.mark.slow
def test_train_starts_from_encoder_weights_and_records_them(weights, tmp_path):
    image, labels = geoseg.write_sample_data(tmp_path / "data", size=256, seed=2)
    result = run_cli("train", image, "--labels", labels, "-o", tmp_path / "m",
                     "--encoder-weights", weights, "--chip-size", "64", "--epochs", "1",
                     "--steps-per-epoch", "2", "--batch-size", "2")
    assert result.exit_code == 0, result.output
    assert "encoder weights" in result.output and "(1 adapted to 4 bands)" in result.output
    training = geoseg.load_model(tmp_path / "m").spec.metrics["training"]
    assert training["encoder_weights"] == "model.safetensors"
    assert len(training["encoder_weights_sha256"]) == 64
    result = run_cli("train", image, "--labels", labels, "-o", tmp_path / "m2",
                     "--encoder-weights", tmp_path / "none.pth", "--chip-size", "64")
    assert result.exit_code == 1 and "none.pth: no such file" in result.output
