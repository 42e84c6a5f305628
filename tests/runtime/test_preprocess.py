"""The runtime's numpy/Pillow path must equal torchvision's eval transform, tensor for tensor."""

import io

import numpy as np
import pytest
from edgeport.runtime.contract import PreprocessContract
from edgeport.runtime.errors import ImageDecodeError
from edgeport.runtime.preprocess import load_image, preprocess
from edgeport.trainer.transforms import eval_transform
from PIL import Image

from ..helpers import decompression_bomb, empty_file, text_as_jpeg, truncated_jpeg

CONTRACT = PreprocessContract(labels=("ants", "bees"))


@pytest.mark.parametrize(
    "contract",
    [
        CONTRACT,
        PreprocessContract(labels=("a", "b"), input_size=(160, 192), resize_size=200, interpolation="bicubic"),
        PreprocessContract(labels=("a", "b"), input_size=(128, 128), resize_size=128, center_crop=False),
    ],
    ids=["imagenet", "bicubic-rect", "squash"],
)
def test_matches_torchvision_eval_transform_on_real_photos(hymenoptera, contract):
    files = sorted((hymenoptera / "val").rglob("*.jpg"))[::10]
    transform = eval_transform(contract)
    for path in files:
        expected = transform(load_image(path)).numpy()
        actual = preprocess(path, contract)
        assert actual.shape == (3, *contract.input_size) and actual.dtype == np.float32
        np.testing.assert_allclose(actual, expected, atol=1e-6, err_msg=str(path))


def test_inputs_of_every_kind_give_the_same_tensor(hymenoptera):
    path = sorted((hymenoptera / "val" / "bees").glob("*.jpg"))[0]
    reference = preprocess(path, CONTRACT)
    rgb = np.asarray(Image.open(path).convert("RGB"))
    assert np.array_equal(preprocess(path.read_bytes(), CONTRACT), reference)
    assert np.array_equal(preprocess(Image.open(path), CONTRACT), reference)
    assert np.array_equal(preprocess(rgb, CONTRACT, color="rgb"), reference)
    assert np.array_equal(preprocess(rgb[:, :, ::-1].copy(), CONTRACT, color="bgr"), reference)


def test_ndarray_without_color_is_refused():
    with pytest.raises(ImageDecodeError, match="color='rgb' or color='bgr'"):
        load_image(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ImageDecodeError, match="uint8"):
        load_image(np.zeros((8, 8, 3), np.float32), color="rgb")


@pytest.mark.parametrize("mode", ["L", "CMYK", "RGBA", "P", "I;16"])
def test_every_mode_becomes_rgb(mode):
    img = Image.new(mode, (40, 30))
    out = load_image(img)
    assert out.mode == "RGB" and out.size == (40, 30)


def test_the_placeholder_gif_in_the_train_set_decodes_to_rgb(hymenoptera, tmp_path):
    gif = hymenoptera / "train" / "ants" / "imageNotFound.gif"
    assert load_image(gif).mode == "RGB"
    # The same GIF under a .jpg name: decoded by content, not by name.
    renamed = tmp_path / "looks_like.jpg"
    renamed.write_bytes(gif.read_bytes())
    assert preprocess(renamed, CONTRACT).shape == (3, 224, 224)


def test_palette_with_transparency_and_grey_png_bytes():
    img = Image.new("P", (20, 20))
    img.info["transparency"] = 0
    buf = io.BytesIO()
    img.save(buf, format="GIF", transparency=0)
    assert load_image(buf.getvalue()).mode == "RGB"


def test_bad_files_raise_errors_that_name_the_file_and_the_fix(hymenoptera, tmp_path):
    good = sorted((hymenoptera / "val" / "ants").glob("*.jpg"))[0]
    cases = {
        truncated_jpeg(good, tmp_path / "truncated.jpg"): "truncated",
        text_as_jpeg(tmp_path / "notes.jpg"): "not an image",
        empty_file(tmp_path / "empty.jpg"): "0 bytes",
        decompression_bomb(tmp_path / "bomb.png"): "decompression bomb",
        tmp_path / "missing.jpg": "not found",
    }
    for path, words in cases.items():
        with pytest.raises(ImageDecodeError, match=words) as info:
            preprocess(path, CONTRACT)
        assert str(path) in str(info.value)
