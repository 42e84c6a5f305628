"""Augmentation presets by name: CPU item transforms on real photos, and the GPU batch path on CPU tensors."""

import pytest
import torch
from edgeport.runtime.contract import PreprocessContract
from edgeport.runtime.errors import UsageError
from edgeport.runtime.preprocess import load_image
from edgeport.trainer.augment import AUG_PRESETS, AugPreset, BatchAugment, aug_names, train_transforms
from edgeport.trainer.transforms import eval_transform
from torchvision.transforms import v2

CONTRACT = PreprocessContract(labels=("a", "b"))


@pytest.mark.parametrize("name", aug_names())
def test_every_preset_makes_normalised_model_inputs_from_a_real_photo(name, sample_photos):
    item, batch = train_transforms(CONTRACT, name, "cpu")
    assert batch is None  # on the CPU everything is an item transform
    torch.manual_seed(0)
    x = item(load_image(sample_photos[0]))
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    lo = (0 - torch.tensor(CONTRACT.mean)) / torch.tensor(CONTRACT.std)
    hi = (1 - torch.tensor(CONTRACT.mean)) / torch.tensor(CONTRACT.std)
    assert ((x >= lo.view(3, 1, 1) - 1e-5) & (x <= hi.view(3, 1, 1) + 1e-5)).all()


def test_none_is_the_contracts_eval_transform_and_the_others_are_random(sample_photos):
    image = load_image(sample_photos[1])
    none = train_transforms(CONTRACT, "none")[0]
    assert torch.equal(none(image), eval_transform(CONTRACT)(image))
    strong = train_transforms(CONTRACT, "strong")[0]
    assert not torch.equal(strong(image), strong(image))
    with pytest.raises(UsageError, match="unknown augmentation preset 'heavy'"):
        train_transforms(CONTRACT, "heavy")


def test_cuda_split_leaves_only_geometry_on_the_cpu(sample_photos):
    """On CUDA the loader crops and scales to [0, 1]; flip/jitter/normalize move to the batch transform."""
    item, batch = train_transforms(CONTRACT, "strong", "cuda")  # builds without a GPU: no tensor is moved
    x = item(load_image(sample_photos[0]))
    assert x.shape == (3, 224, 224) and 0 <= x.min() and x.max() <= 1
    assert isinstance(batch, BatchAugment) and batch.preset is AUG_PRESETS["strong"]
    assert train_transforms(CONTRACT, "none", "cuda")[1] is None


def _photo_batch(sample_photos, n=8):
    crop = v2.Compose([v2.Resize(64), v2.CenterCrop(64), v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    x = crop(load_image(sample_photos[0]))
    return x.expand(n, -1, -1, -1).clone()  # the same image n times: any difference is the augmentation's


def test_batch_flip_is_an_exact_mirror_per_sample_and_normalises_like_torchvision(sample_photos):
    x = _photo_batch(sample_photos)
    flip_only = BatchAugment(AUG_PRESETS["light"], CONTRACT)
    out = flip_only(x, generator=torch.Generator().manual_seed(0))
    normalize = v2.Normalize(CONTRACT.mean, CONTRACT.std)
    plain, mirrored = normalize(x[0]), normalize(x[0].flip(-1))
    kinds = [torch.allclose(o, plain, atol=1e-6) - torch.allclose(o, mirrored, atol=1e-6) for o in out]
    assert set(kinds) == {1, -1}  # each sample is either untouched or mirrored, and both happen in one batch


def test_batch_colour_jitter_draws_per_sample_within_the_presets_range(sample_photos):
    x = _photo_batch(sample_photos, n=16)
    preset = AUG_PRESETS["strong"]
    out = BatchAugment(preset, CONTRACT)(x, generator=torch.Generator().manual_seed(1))
    pixels = out * torch.tensor(CONTRACT.std).view(1, 3, 1, 1) + torch.tensor(CONTRACT.mean).view(1, 3, 1, 1)
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    assert len({round(float(p.mean()), 4) for p in pixels}) == 16  # independent draws, not one per batch
    brightness_only = BatchAugment(AugPreset("b", (0.5, 1.0), brightness=0.3), CONTRACT)
    ratio = (brightness_only(x) * torch.tensor(CONTRACT.std).view(1, 3, 1, 1)
             + torch.tensor(CONTRACT.mean).view(1, 3, 1, 1)).mean(dim=(1, 2, 3)) / x.mean(dim=(1, 2, 3))
    assert (ratio > 0.7 - 1e-4).all() and (ratio < 1.3 + 1e-4).all()  # clamping can only pull the ratio down
