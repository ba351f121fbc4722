"""The FER-native networks: first-class backbones that build, export faithfully and learn from scratch."""

import numpy as np
import pytest
import torch

from ferbench.constants import FER2013_CLASSES
from ferbench.errors import FerbenchError
from ferbench.models.backbones import build_backbone
from ferbench.models.classifier import ImageClassifier, build_head, load_classifier, trunk_blocks, with_tta
from ferbench.models.export import export_onnx, onnx_logits, onnx_session
from ferbench.models.fernets import NETWORKS
from ferbench.models.runtimes import torch_runtime
from ferbench.specs import BackboneSpec
from ferbench.training.benchmark import run_train
from tests.support import candidate_training, run_settings, synthetic_prepared, tta

pytestmark = pytest.mark.slow  # make test-fast leaves these out; make test runs them

CLASSES = list(FER2013_CLASSES)
CPU = torch.device("cpu")


def fer_spec(model: str, **changes) -> BackboneSpec:
    fields = {"source": "ferbench", "model": model, "pretrained": False, "weights": None, "input_size": None}
    return BackboneSpec(name=model, **{**fields, **changes})


@pytest.mark.parametrize("name", list(NETWORKS))
def test_fer_networks_build_and_export_to_onnx_with_identical_outputs(name, tmp_path):
    torch.manual_seed(0)
    backbone = build_backbone(fer_spec(name))
    assert backbone.input_size == 48 and len(backbone.mean) == 1  # one grayscale channel at the native size
    model = ImageClassifier(backbone, build_head(backbone.feature_dim, 7)).eval()
    images = np.random.default_rng(0).integers(0, 256, (5, 48, 48), dtype=np.uint8)
    expected = torch_runtime(model).logits(images)
    session = onnx_session(export_onnx(model, tmp_path / "model.onnx"), threads=1)
    np.testing.assert_allclose(onnx_logits(session, images), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(onnx_logits(session, images[:1]), expected[:1], rtol=1e-4, atol=1e-4)
    # with test-time augmentation inside the graph too
    averaged = with_tta(model, tta(flip=True, shifts=4))
    session = onnx_session(export_onnx(averaged, tmp_path / "tta.onnx"), threads=1)
    expected = torch_runtime(averaged).logits(images)
    np.testing.assert_allclose(onnx_logits(session, images), expected, rtol=1e-4, atol=1e-4)


def test_trainable_last_blocks_of_a_fer_network_are_its_last_conv_units():
    backbone = build_backbone(fer_spec("vgg8_w32"))
    blocks = trunk_blocks(backbone.trunk)
    assert len(blocks) == 8 and blocks[-1] == "features.10"


def test_fer_network_weights_need_a_local_file(tmp_path):
    with pytest.raises(FerbenchError, match="no published weights"):
        build_backbone(fer_spec("vgg8_w32", pretrained=True))
    with pytest.raises(FerbenchError, match="has no network 'vgg99'"):
        build_backbone(fer_spec("vgg99"))
    trunk = build_backbone(fer_spec("vgg8_w32")).trunk
    torch.save(trunk.state_dict(), tmp_path / "trunk.pt")
    loaded = build_backbone(fer_spec("vgg8_w32", pretrained=True, weights=str(tmp_path / "trunk.pt"))).trunk
    for name, tensor in trunk.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name])
    torch.save({"other": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(FerbenchError, match="not a state dict of ferbench's 'vgg8_w32'"):
        build_backbone(fer_spec("vgg8_w32", pretrained=True, weights=str(tmp_path / "foreign.pt")))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return synthetic_prepared(tmp_path_factory.mktemp("fer"), 80, 15, seed=5)


def test_the_shipped_fer_network_learns_synthetic_faces_from_scratch(prepared, tmp_path, monkeypatch):
    """vgg8_w32, what the CPU preset ships; the deeper vgg11_w64 trains through the same code (and
    learned faster when this test covered it too: 0.73 after 5 epochs), so it is only built and
    exported above, to keep the suite within its time. From scratch the compact net stays at chance
    for ~3 epochs of 35 batches, then reaches 0.46 after 5."""
    name = "vgg8_w32"
    monkeypatch.chdir(tmp_path)
    section = candidate_training(epochs=6, batch_size=16, lr=0.001, augment={"shift": 0.05}, eval_batch_size=128)
    summary = run_train(fer_spec(name), section, run_settings(prepared, tta(flip=True)))
    assert summary.test.accuracy >= 2 / 7 and summary.tta.test.accuracy >= 2 / 7
    reloaded = load_classifier(fer_spec(name), tmp_path / f"models/train/{name}.pt", 7)
    assert sum(p.numel() for p in reloaded.parameters()) > 1e6
