"""2D image datasets of the semi-supervised track (BUSI): scripts/prepare_busi.py from both source
layouts, the checked reads and MGCC's labelled share, generated unlabelled images in place of or
beside the real pool, and train.py / test.py on a tiny BUSI folder."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import test as test_script  # noqa: F401  (registers the "test" command)
import train as train_script  # noqa: F401  (registers the "train" command)
from config import composed_config, ex
from dataloaders.generated_images import (H5_FORMAT, PNG_FORMAT, read_generated, with_unlabelled_source,
                                          write_generated_image, write_record)
from dataloaders.image_datasets import IMAGE_DATASET_SPECS, image_dataset_data, labelled_image_count
from experiment.config_checks import ConfigError, check_training_config
from utils.io import DataError, read_json

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import prepare_busi  # noqa: E402  (a script, after the path set-up)

SPEC = IMAGE_DATASET_SPECS["BUSI"]
SIZE = 32


def lesion_case(rng: np.random.Generator, height: int = 40, width: int = 36) -> tuple[np.ndarray, np.ndarray]:
    """A grey image (H, W) uint8 with a bright square and its 0/255 mask."""
    mask = np.zeros((height, width), np.uint8)
    top, left = rng.integers(2, 16, size=2)
    mask[top:top + 14, left:left + 12] = 255
    image = (rng.random((height, width)) * 60 + (mask > 0) * 150).astype(np.uint8)
    return image, mask


def write_download(folder: Path, n_per_category: int = 5) -> None:
    """BUSI's download: benign/ malignant/ normal/ with <case>.png and <case>_mask*.png."""
    rng = np.random.default_rng(0)
    for category in ("benign", "malignant", "normal"):
        (folder / category).mkdir(parents=True)
        for index in range(1, n_per_category + 1):
            image, mask = lesion_case(rng)
            cv2.imwrite(str(folder / category / f"{category} ({index}).png"), np.stack([image] * 3, axis=-1))
            cv2.imwrite(str(folder / category / f"{category} ({index})_mask.png"), mask)
    second = np.zeros_like(mask)
    second[30:36, 2:8] = 255  # benign (1) has a second lesion in a mask of its own
    cv2.imwrite(str(folder / "benign" / "benign (1)_mask_1.png"), second)


def write_mgcc_layout(folder: Path, n_cases: int = 10) -> list[str]:
    """MGCC's layout: images/, masks/0/ and busi_{train,val}{1,2,3}.txt."""
    rng = np.random.default_rng(1)
    (folder / "images").mkdir(parents=True)
    (folder / "masks" / "0").mkdir(parents=True)
    cases = [f"benign ({index})" for index in range(n_cases)]
    for case in cases:
        image, mask = lesion_case(rng)
        cv2.imwrite(str(folder / "images" / f"{case}.png"), np.stack([image] * 3, axis=-1))
        cv2.imwrite(str(folder / "masks" / "0" / f"{case}.png"), mask)
    for split in (1, 2, 3):
        order = list(np.random.default_rng(split).permutation(cases))
        (folder / f"busi_train{split}.txt").write_text("\n".join(order[3:]) + "\n")
        (folder / f"busi_val{split}.txt").write_text("\n".join(order[:3]) + "\n")
    return cases


@pytest.fixture(scope="module")
def tiny_busi(tmp_path_factory) -> Path:
    """A data root with BUSI prepared from a tiny MGCC layout (10 cases: 7 training, 3 validation)."""
    root = tmp_path_factory.mktemp("busi")
    write_mgcc_layout(root / "mgcc")
    assert prepare_busi.main(["--source", str(root / "mgcc"), "--out", str(root / "data" / "BUSI")]) == 0
    return root / "data"


# --- preparation -------------------------------------------------------------------------------------------


def test_prepare_busi_from_the_download_merges_masks_and_writes_seeded_splits(tmp_path):
    write_download(tmp_path / "download")
    metadata = prepare_busi.prepare(tmp_path / "download", tmp_path / "BUSI")
    assert metadata["n_cases"] == 10 and "seeded" in metadata["splits"]  # normal cases left out
    mask = cv2.imread(str(tmp_path / "BUSI" / "masks" / "benign (1).png"), cv2.IMREAD_UNCHANGED)
    assert mask.ndim == 2 and set(np.unique(mask)) == {0, 1} and mask[30:36, 2:8].all()  # both lesions
    image = cv2.imread(str(tmp_path / "BUSI" / "images" / "malignant (2).png"), cv2.IMREAD_UNCHANGED)
    assert image.ndim == 2 and image.dtype == np.uint8
    for split in (1, 2, 3):
        training = (tmp_path / "BUSI" / f"train{split}.list").read_text().split("\n")[:-1]
        validation = (tmp_path / "BUSI" / f"val{split}.list").read_text().split("\n")[:-1]
        assert len(validation) == 3 and sorted(training + validation) == sorted(
            f"{category} ({index})" for category in ("benign", "malignant") for index in range(1, 6))
    assert read_json(tmp_path / "BUSI" / "dataset.json")["classes"] == {"1": "lesion"}


def test_prepare_busi_keeps_mgccs_split_files(tiny_busi):
    source = tiny_busi.parent / "mgcc"
    for split in (1, 2, 3):
        assert (tiny_busi / "BUSI" / f"train{split}.list").read_text() == (
            source / f"busi_train{split}.txt").read_text()
    assert read_json(tiny_busi / "BUSI" / "dataset.json")["splits"].startswith("MGCC's split files")


# --- reads and the labelled share --------------------------------------------------------------------------


def test_the_first_semi_percent_of_the_training_list_is_labelled_and_validation_is_the_test_set(tiny_busi):
    data = image_dataset_data(tiny_busi / "BUSI", SPEC, fold=1, semi_percent=0.5)
    training = tuple((tiny_busi / "BUSI" / "train2.list").read_text().splitlines())
    assert labelled_image_count(7, 0.5) == 3 and len(data.labelled) == 3 and len(data.unlabelled) == 4
    assert data.labelled.ids == training[:3] and data.unlabelled.ids == training[3:]
    assert data.unlabelled.labels is None and data.validation_ids == data.test_ids and len(data.test_ids) == 3
    volume = data.evaluation_volumes(data.test_ids)[0]
    assert volume.image.shape == volume.label.shape == (1, 40, 36) and volume.distance_unit == "pixels"
    assert 0.0 <= volume.image.min() and volume.image.max() <= 1.0 and set(np.unique(volume.label)) == {0, 1}
    assert data.n_classes == 2 and data.classes == {1: "lesion"}


def test_bad_busi_files_are_refused_naming_the_file(tmp_path, tiny_busi):
    folder = tmp_path / "BUSI"
    shutil.copytree(tiny_busi / "BUSI", folder)
    case = (folder / "train1.list").read_text().split("\n")[0]
    cv2.imwrite(str(folder / "masks" / f"{case}.png"), np.full((40, 36), 255, np.uint8))
    with pytest.raises(DataError, match=r"masks/.*\.png: label values \[255\]"):
        image_dataset_data(folder, SPEC, 0, 1.0)
    cv2.imwrite(str(folder / "masks" / f"{case}.png"), np.zeros((20, 20), np.uint8))
    with pytest.raises(DataError, match="mask shape"):
        image_dataset_data(folder, SPEC, 0, 1.0)
    (folder / "images" / f"{case}.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"images/.*\.png: cannot be read as an image"):
        image_dataset_data(folder, SPEC, 0, 0.5)
    (folder / "images" / f"{case}.png").unlink()
    with pytest.raises(DataError, match="train1.list names 1 file"):
        image_dataset_data(folder, SPEC, 0, 0.5)
    with pytest.raises(ValueError, match="splits are folds 0..2"):
        image_dataset_data(folder, SPEC, 3, 0.5)


# --- generated unlabelled images -----------------------------------------------------------------------------


@pytest.mark.parametrize("image_format", [PNG_FORMAT, H5_FORMAT])
def test_generated_images_replace_or_join_the_unlabelled_pool(tmp_path, tiny_busi, image_format):
    folder = tmp_path / "generated"
    images = np.random.default_rng(0).random((3, SIZE, SIZE)).astype(np.float32)
    for index, image in enumerate(images):
        write_generated_image(folder, image_format, index, image)
    write_record(folder, {"format": image_format, "n_images": 3, "seed": 0})
    generated = read_generated(folder, 2)
    tolerance = 0.5 / 255 if image_format == PNG_FORMAT else 0.0  # 8-bit rounding
    assert np.abs(generated.image(1) - images[1]).max() <= tolerance + 1e-6
    data = image_dataset_data(tiny_busi / "BUSI", SPEC, 0, 0.5)
    assert with_unlabelled_source(data, "real", None) is data
    assert with_unlabelled_source(data, "generated", folder).unlabelled.ids == ("gen_00000", "gen_00001", "gen_00002")
    both = with_unlabelled_source(data, "both", folder).unlabelled
    assert len(both) == len(data.unlabelled) + 3 and both.ids[:len(data.unlabelled)] == data.unlabelled.ids
    (folder / "generation.json").unlink()
    with pytest.raises(DataError, match="generation.json: no generation record"):
        with_unlabelled_source(data, "generated", folder)


# --- configs and train.py -------------------------------------------------------------------------------------


def test_busi_configs_follow_mgccs_script():
    paper = composed_config(["busi", "mgcc"])
    assert (paper["n_steps"], paper["semi_percent"], paper["batch_size"], paper["labelled_batch_size"]) == (
        20_000, 0.5, 8, 4)
    quarter = composed_config(["busi", "mgcc"], {"semi_percent": 0.25})
    assert quarter["n_steps"] == quarter["original_n_steps"] == 10_000
    with pytest.raises(ConfigError, match="semi_percent=1.5 is out of range"):
        check_training_config(composed_config(["busi", "mgcc", "cpu"], {"semi_percent": 1.5}))
    with pytest.raises(ConfigError, match="needs a method that uses unlabelled images and generated_dir"):
        check_training_config(composed_config(["busi", "mgcc", "cpu"], {"unlabelled_source": "generated"}))


def test_mgcc_trains_on_busi_with_generated_unlabelled_images_and_test_scores_it(tmp_path, tiny_busi):
    folder = tmp_path / "generated"
    for index, image in enumerate(np.random.default_rng(0).random((4, SIZE, SIZE))):
        write_generated_image(folder, PNG_FORMAT, index, image)
    write_record(folder, {"format": PNG_FORMAT, "n_images": 4})
    config = {"data_root": str(tiny_busi), "runs_root": str(tmp_path / "runs"), "image_size": SIZE, "n_steps": 2,
              "batch_size": 4, "labelled_batch_size": 2, "validate_every": 2, "checkpoint_every": 2, "log_every": 1,
              "unlabelled_source": "generated", "generated_dir": str(folder)}
    options = {"--loglevel": "ERROR"}
    ex.run("train", config_updates=config, named_configs=["busi", "mgcc", "cpu"], options=options)
    result = ex.run("test", config_updates=config, named_configs=["busi", "mgcc", "cpu"], options=options)
    run = tmp_path / "runs" / "BUSI_mgcc_unlabelled_generated_labelled0.5_fold0"
    summary = read_json(run / "evaluation_fold0" / "summary.json")
    assert set(summary["organs"]) == {"lesion"} and summary["distance_unit"] == "pixels"
    assert result.result == pytest.approx(summary["mean_dice"])
