import json

import pytest
from edgeport.runtime.contract import METADATA_KEY, SCHEMA_VERSION, PreprocessContract
from edgeport.runtime.errors import ContractError


def make(**kw):
    return PreprocessContract(labels=kw.pop("labels", ("ants", "bees")), **kw)


def test_json_round_trip_is_exact_and_canonical():
    c = make(resize_size=232, interpolation="bicubic", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    again = PreprocessContract.from_json(c.to_json())
    assert again == c
    assert again.to_json() == c.to_json()  # byte-stable: reproducible model files
    assert json.loads(c.to_json())["schema_version"] == SCHEMA_VERSION
    assert METADATA_KEY == "edgeport.contract"


def test_lists_from_json_become_tuples():
    c = PreprocessContract.from_dict({"labels": ["a", "b"], "input_size": [160, 160], "resize_size": 182})
    assert c.labels == ("a", "b") and c.input_size == (160, 160)


@pytest.mark.parametrize(
    "kw, words",
    [
        ({"labels": ("only",)}, "at least 2"),
        ({"input_size": (224,)}, "input_size"),
        ({"resize_size": 100}, "resize_size"),
        ({"interpolation": "lanczos"}, "interpolation"),
        ({"std": (0.2, 0.0, 0.2)}, "std must be positive"),
        ({"channel_order": "BGR"}, "only 'RGB'"),
        ({"schema_version": 99}, "re-export"),
    ],
)
def test_invalid_contracts_say_what_is_wrong(kw, words):
    with pytest.raises(ContractError, match=words):
        make(**kw)


def test_unknown_fields_and_missing_labels_are_refused():
    with pytest.raises(ContractError, match="unknown fields"):
        PreprocessContract.from_dict({"labels": ["a", "b"], "gamma": 2.2})
    with pytest.raises(ContractError, match="no 'labels'"):
        PreprocessContract.from_dict({"input_size": [224, 224]})
    with pytest.raises(ContractError, match="not valid JSON"):
        PreprocessContract.from_json("{not json", source="m.onnx")


def test_contract_is_frozen():
    c = make()
    with pytest.raises(Exception):
        c.mean = (0, 0, 0)  # type: ignore[misc]
