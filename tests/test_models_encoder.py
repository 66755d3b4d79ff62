"""ResNet encoder: output strides, projection, pretrained weights from files, offline errors."""
import urllib.error

import pytest
import torch

from models.encoder import PretrainedWeightsError, ResNetEncoder


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_resnet18_output_stride_and_channels(output_stride):
    encoder = ResNetEncoder("resnet18", output_stride=output_stride, feature_channels=32).eval()
    with torch.no_grad():
        features = encoder(torch.randn(1, 3, 64, 96))
    assert features.shape == (1, 32, 64 // output_stride, 96 // output_stride)


def test_resnet101_trunk_has_output_stride_8_and_dilated_layers():
    encoder = ResNetEncoder("resnet101", output_stride=8).eval()
    with torch.no_grad():
        features = encoder(torch.randn(1, 3, 32, 32))
    assert features.shape == (1, 256, 4, 4)
    layer4 = encoder.trunk[7]
    assert layer4[0].conv2.stride == (1, 1) and layer4[1].conv2.dilation == (4, 4)


def test_local_weights_file_is_loaded_including_deeplab_backbone_naming(tmp_path):
    source = ResNetEncoder("resnet18", output_stride=8)
    names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    renamed = {}
    for key, value in source.trunk.state_dict().items():
        index, _, rest = key.partition(".")
        renamed[f"backbone.{names[int(index)]}.{rest}"] = value
    renamed["classifier.0.weight"] = torch.zeros(1)
    path = tmp_path / "deeplab.pth"
    torch.save({"state_dict": renamed}, path)
    loaded = ResNetEncoder("resnet18", output_stride=8, pretrained=path)
    for key, value in source.trunk.state_dict().items():
        assert torch.equal(loaded.trunk.state_dict()[key], value)


def test_weights_that_do_not_fit_or_do_not_exist_raise_clear_errors(tmp_path):
    torch.save({"fc.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(PretrainedWeightsError, match="missing"):
        ResNetEncoder("resnet18", pretrained=tmp_path / "other.pth")
    with pytest.raises(PretrainedWeightsError, match="not found"):
        ResNetEncoder("resnet18", pretrained=tmp_path / "absent.pth")
    with pytest.raises(PretrainedWeightsError, match="IMAGENET1K_V1"):
        ResNetEncoder("resnet18", pretrained="NO_SUCH_WEIGHTS")


def test_offline_torchvision_weights_error_explains_local_file(tmp_path, monkeypatch):
    def no_internet(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_internet)
    with pytest.raises(PretrainedWeightsError, match="local .pth file") as error:
        ResNetEncoder("resnet101", pretrained="COCO_WITH_VOC_LABELS_V1")
    assert "deeplabv3_resnet101" in str(error.value)


def test_unknown_encoder_or_output_stride_is_rejected():
    with pytest.raises(ValueError, match="resnet50"):
        ResNetEncoder("vgg16")
    with pytest.raises(ValueError, match="output_stride"):
        ResNetEncoder("resnet18", output_stride=4)
