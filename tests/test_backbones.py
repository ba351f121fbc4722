"""The backbone registry: every seed backbone builds offline, and local weights load back exactly."""

import pytest
import torch

from ferbench.errors import FerbenchError
from ferbench.models.backbones import build_backbone
from ferbench.models.checkpoint import load_checkpoint, save_checkpoint
from ferbench.params import load_params
from ferbench.specs import BackboneSpec
from ferbench.training.settings import backbone_spec
from tests.support import PROJECT_ROOT, save_tiny_clip

SEED_FEATURES = {"resnet18": 512, "vgg16": 4096, "densenet121": 1024, "vit_b_16": 768, "clip_vit_b32": 768}
IMAGENET_MEAN = (0.485, 0.456, 0.406)


def spec(name, **changes):
    fields = {"source": "torchvision", "model": name, "pretrained": False, "weights": None, "input_size": None}
    return BackboneSpec(name=name, **{**fields, **changes})


@pytest.mark.parametrize("name", list(SEED_FEATURES))
def test_seed_backbones_build_without_weights(name):
    params = load_params(PROJECT_ROOT / "params.yaml")
    backbone = build_backbone(backbone_spec(params, name).model_copy(update={"pretrained": False}))
    assert backbone.feature_dim == SEED_FEATURES[name]
    assert backbone.input_size == 224
    backbone.trunk.eval()
    with torch.no_grad():
        features = backbone.trunk(torch.randn(1, 3, 224, 224))
    assert features.shape == (1, SEED_FEATURES[name])
    if name == "clip_vit_b32":
        assert backbone.mean != IMAGENET_MEAN and backbone.std != (0.229, 0.224, 0.225)
    else:
        assert backbone.mean == IMAGENET_MEAN


def _same_outputs(first, second, size):
    first.trunk.eval()
    second.trunk.eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(first.trunk(x), second.trunk(x))


def test_torchvision_weights_file_loads_back(tmp_path):
    random = build_backbone(spec("resnet18"))
    import torchvision

    full = torchvision.models.resnet18()
    full.fc = torch.nn.Linear(512, 1000)
    full.load_state_dict({**random.trunk.state_dict(), **full.fc.state_dict(prefix="fc.")}, strict=True)
    torch.save(full.state_dict(), tmp_path / "resnet18.pth")
    loaded = build_backbone(spec("resnet18", pretrained=True, weights=str(tmp_path / "resnet18.pth")))
    _same_outputs(random, loaded, 64)


def test_timm_weights_file_loads_back(tmp_path):
    import timm

    model = timm.create_model("resnet10t", pretrained=False)
    torch.save(model.state_dict(), tmp_path / "resnet10t.pth")
    reference = timm.create_model("resnet10t", pretrained=False, num_classes=0)
    reference.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("fc.")})
    loaded = build_backbone(spec("resnet10t", source="timm", pretrained=True, weights=str(tmp_path / "resnet10t.pth")))
    assert loaded.feature_dim == 512
    reference.eval()
    loaded.trunk.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.trunk(x), reference(x))


def test_transformers_folder_loads_back_with_its_own_preprocessing(tmp_path):
    save_tiny_clip(tmp_path / "clip")
    loaded = build_backbone(
        spec("clip", source="transformers", model="x/y", pretrained=True, weights=str(tmp_path / "clip"))
    )
    assert (loaded.feature_dim, loaded.input_size, loaded.mean) == (32, 64, (0.1, 0.2, 0.3))
    again = build_backbone(
        spec("clip", source="transformers", model="x/y", pretrained=True, weights=str(tmp_path / "clip"))
    )
    _same_outputs(loaded, again, 64)


def test_unavailable_weights_name_the_backbone_and_the_ways_out(tmp_path):
    with pytest.raises(FerbenchError, match="backbone 'resnet18': weights file .* not found"):
        build_backbone(spec("resnet18", pretrained=True, weights=str(tmp_path / "missing.pth")))
    with pytest.raises(FerbenchError, match="backbone 'clip'.*pretrained: false"):
        build_backbone(
            spec("clip", source="transformers", model="x/y", pretrained=True, weights=str(tmp_path / "none"))
        )


def test_bad_specs_are_clear_errors():
    with pytest.raises(FerbenchError, match="torchvision has no model 'resnet999'"):
        build_backbone(spec("resnet999"))
    with pytest.raises(FerbenchError, match="timm has no model"):
        build_backbone(spec("nonsense_net", source="timm"))


def test_checkpoint_round_trip(tmp_path):
    model = torch.nn.Linear(4, 2)
    save_checkpoint(tmp_path / "m.pt", model, epoch=3, backbone="resnet18")
    state, metadata = load_checkpoint(tmp_path / "m.pt")
    assert metadata == {"epoch": 3, "backbone": "resnet18"}
    torch.testing.assert_close(state["weight"], model.weight.detach())


def test_checkpoint_of_a_compiled_model_has_plain_keys(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 2))
    save_checkpoint(tmp_path / "m.pt", torch.compile(model))
    state, _ = load_checkpoint(tmp_path / "m.pt")
    assert sorted(state) == ["0.bias", "0.weight"]
    torch.nn.Sequential(torch.nn.Linear(4, 2)).load_state_dict(state)
