"""The decoded-image cache on real photos: exact (same pixels, same run), bounded, and blind to broken files."""

import json
import shutil

import pytest
import torch
from edgeport.runtime.errors import ImageDecodeError
from edgeport.trainer import TrainConfig, fit
from edgeport.trainer.augment import train_transforms
from edgeport.trainer.checkpoint import load_checkpoint
from edgeport.trainer.data import ImageListDataset
from edgeport.trainer.decode_cache import DecodeCache
from edgeport.trainer.models import arch_contract
from edgeport.trainer.transforms import eval_geometry, eval_to_input, eval_transform

from ..helpers import hymenoptera_subset, truncated_jpeg


@pytest.fixture(scope="module")
def photos(hymenoptera):
    return sorted((hymenoptera / "train" / "bees").glob("*.jpg"))[:6]


def _cache(limit_bytes=1 << 30, said=None):
    return DecodeCache(limit_bytes, eval_geometry(arch_contract("mobilenet_v2")),
                       (said.append if said is not None else lambda _: None))


def test_cached_eval_and_train_images_are_the_uncached_pixels(photos):
    contract = arch_contract("mobilenet_v2")
    samples = [(p, 0) for p in photos]
    cache = _cache()
    plain_eval = ImageListDataset(samples, eval_transform(contract))
    cached_eval = ImageListDataset(samples, eval_to_input(contract), images=cache.eval_image)
    train_tf = train_transforms(contract, "strong")[0]
    plain_train = ImageListDataset(samples, train_tf)
    cached_train = ImageListDataset(samples, train_tf, images=cache.source)
    for epoch in range(2):  # the second pass is served from the cache
        for i in range(len(samples)):
            assert torch.equal(plain_eval[i][0], cached_eval[i][0])
            torch.manual_seed(epoch * 100 + i)
            expected = plain_train[i][0]
            torch.manual_seed(epoch * 100 + i)
            assert torch.equal(expected, cached_train[i][0])
    assert cache.stats.misses == 2 * len(samples) and cache.stats.hits == 2 * len(samples)
    assert cache.stats.images == 2 * len(samples)


def test_the_cache_stops_at_its_limit_says_so_once_and_still_serves(photos):
    said: list[str] = []
    one_crop = 224 * 224 * 3
    cache = _cache(limit_bytes=2 * one_crop, said=said)
    images = [cache.eval_image(p) for p in photos] + [cache.eval_image(p) for p in photos]
    assert cache.stats.images == 2 and cache.stats.bytes == 2 * one_crop and cache.stats.full_at == 2
    assert cache.stats.hits == 2  # only the first two were kept
    assert all(im.size == (224, 224) for im in images)
    assert len(said) == 1 and "decode cache: full at 2 images" in said[0] and "decoded again" in said[0]


def test_a_file_that_fails_to_decode_is_never_cached(tmp_path, photos):
    broken = truncated_jpeg(photos[0], tmp_path / "broken.jpg")
    cache = _cache()
    for _ in range(2):
        with pytest.raises(ImageDecodeError):
            cache.eval_image(broken)
    assert cache.stats.images == 0 and cache.stats.misses == 2
    dataset = ImageListDataset([(broken, 1), (photos[1], 0)], eval_to_input(arch_contract("mobilenet_v2")),
                               blank=torch.zeros(3, 224, 224), images=cache.eval_image)
    x, label, failures = dataset[0]  # validation: a blank, label -1, and the failure reported, on every pass
    assert label == -1 and failures and failures[0][0] == str(broken)


@pytest.mark.slow
def test_a_cached_run_is_the_uncached_run(tmp_path, hymenoptera):
    data = hymenoptera_subset(tmp_path / "data", hymenoptera, {"train": 8, "val": 4})
    shutil.copy(hymenoptera / "train" / "ants" / "imageNotFound.gif", data / "train" / "ants" / "placeholder.gif")
    config = {"freeze_epochs": 1, "epochs": 1, "batch_size": 8, "seed": 0, "device": "cpu", "workers": 0}
    cached = fit(data, tmp_path / "cached", TrainConfig(**config), progress=False)
    plain = fit(data, tmp_path / "plain", TrainConfig(**config, cache_mb=0), progress=False)
    strip = [[{k: v for k, v in row.items() if k != "seconds"} for row in r.history] for r in (cached, plain)]
    assert strip[0] == strip[1]
    a, b = (load_checkpoint(r.best_path)["state_dict"] for r in (cached, plain))
    assert all(torch.equal(a[k], b[k]) for k in a)
    summary = json.loads(cached.metrics_path.read_text())["decode_cache"]
    # eval crops of the 17 train and 8 val photos (probe, validation, refit, calibration), and the sources of the
    # 16 photos the epoch's two full batches of 8 drew
    assert summary["images"] == 17 + 8 + 16 and summary["hits"] > 0 and summary["full_at"] is None
    assert "decode_cache" not in json.loads(plain.metrics_path.read_text())
    with_workers = fit(data, tmp_path / "workers", TrainConfig(**{**config, "epochs": 0, "workers": 1}), progress=False)
    assert "decode_cache" not in json.loads(with_workers.metrics_path.read_text())  # each worker would keep a copy
