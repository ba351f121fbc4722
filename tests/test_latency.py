"""ONNX export, int8 quantization, latency measurement and the deployment pick."""

import numpy as np
import pytest
import torch

from ferbench.errors import FerbenchError
from ferbench.latency import (
    Runtime,
    agreement,
    build_runtimes,
    count_flops,
    fastest_faithful,
    latency_report,
    measure_variants,
    timing,
)
from ferbench.models.backbones import BackboneSpec, build_backbone
from ferbench.models.classifier import ImageClassifier, build_head
from ferbench.models.export import export_onnx, onnx_logits, onnx_session
from tests.conftest import save_tiny_clip


def classifier(spec: BackboneSpec) -> ImageClassifier:
    torch.manual_seed(0)
    backbone = build_backbone(spec)
    return ImageClassifier(backbone, build_head(backbone.feature_dim, 7)).eval()


@pytest.fixture(scope="module")
def resnet():
    return classifier(BackboneSpec("resnet18", "torchvision", "resnet18", False, None, 48))


def images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 48, 48), dtype=np.uint8)


@pytest.mark.parametrize("kind", ["resnet18", "clip"])
def test_onnx_export_matches_pytorch(kind, resnet, tmp_path):
    if kind == "clip":
        model = classifier(BackboneSpec("clip", "transformers", "x/y", True, str(save_tiny_clip(tmp_path / "c")), None))
    else:
        model = resnet
    path = export_onnx(model, tmp_path / "model.onnx")
    batch = images(5)
    with torch.inference_mode():
        expected = model(torch.from_numpy(batch)).numpy()
    session = onnx_session(path, threads=1)
    np.testing.assert_allclose(onnx_logits(session, batch), expected, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(onnx_logits(session, batch[:1]), expected[:1], rtol=1e-3, atol=1e-4)  # any batch size


def test_agreement_is_the_share_of_equal_predictions():
    assert agreement(np.array([0, 1, 2, 3]), np.array([0, 1, 0, 3])) == 0.75
    assert agreement(np.array([6]), np.array([6])) == 1.0
    with pytest.raises(ValueError):
        agreement(np.array([0, 1]), np.array([0]))


def test_measured_agreement_and_accuracy_per_variant():
    labels = np.array([0, 1, 2, 3, 4, 5, 6, 0])
    pixels = labels.reshape(-1, 1, 1).repeat(48, 1).repeat(48, 2).astype(np.uint8)  # class id as the pixel value

    def predicting(offset_on):  # logits peaking at the pixel value, except `offset_on` images shifted by one
        def logits(batch):
            classes = batch[:, 0, 0].astype(int).copy()
            classes[np.isin(classes, offset_on)] = (classes[np.isin(classes, offset_on)] + 1) % 7
            return np.eye(7, dtype=np.float32)[classes]

        return logits

    runtimes = {"torch_fp32": Runtime("torch_fp32", predicting([])), "onnx_fp32": Runtime("onnx_fp32", predicting([])),
                "onnx_int8": Runtime("onnx_int8", predicting([2, 5]))}  # fmt: skip
    result = measure_variants(runtimes, pixels, labels, warmup=1, runs=3)
    assert result["torch_fp32"]["agreement"] == result["onnx_fp32"]["agreement"] == 1.0
    assert result["onnx_int8"]["agreement"] == pytest.approx(6 / 8)
    assert result["torch_fp32"]["val_accuracy"] == 1.0 and result["onnx_int8"]["val_accuracy"] == pytest.approx(6 / 8)


def test_timing_percentiles_are_positive_and_ordered():
    result = timing(lambda: sum(range(20_000)), warmup=2, runs=50)
    assert 0 < result["p50_ms"] <= result["p90_ms"] <= result["p99_ms"]
    assert result["fps"] == pytest.approx(1000 / result["mean_ms"])
    with pytest.raises(FerbenchError, match="latency.runs"):
        timing(lambda: None, warmup=0, runs=0)


def test_latency_report_of_a_real_model(resnet, tmp_path):
    report = latency_report(resnet, tmp_path, images(40), np.zeros(40, dtype=np.int64), threads=1, warmup=2, runs=10,
                            min_agreement=0.99)  # fmt: skip
    assert set(report["variants"]) == {"torch_fp32", "onnx_fp32", "onnx_int8"}
    for result in report["variants"].values():
        assert 0 < result["p50_ms"] <= result["p90_ms"] <= result["p99_ms"]
        assert 0 <= result["agreement"] <= 1
    assert report["variants"]["onnx_fp32"]["agreement"] == 1.0
    assert report["variants"][report["fastest_faithful"]]["agreement"] >= 0.99
    assert (tmp_path / "model.onnx").is_file() and (tmp_path / "model.int8.onnx").is_file()
    assert (tmp_path / "model.int8.onnx").stat().st_size < (tmp_path / "model.onnx").stat().st_size / 2
    assert report["gflops"] == pytest.approx(count_flops(resnet) / 1e9) and report["gflops"] > 0.05


def test_int8_runtime_agreement_matches_a_direct_comparison(resnet, tmp_path):
    runtimes = build_runtimes(resnet, tmp_path, threads=1)
    batch = images(64, seed=3)
    reference = runtimes["torch_fp32"].logits(batch).argmax(1)
    int8 = runtimes["onnx_int8"].logits(batch).argmax(1)
    measured = measure_variants(runtimes, batch, reference, warmup=0, runs=1)
    assert measured["onnx_int8"]["agreement"] == pytest.approx((int8 == reference).mean())


def test_fastest_faithful_skips_a_faster_unfaithful_variant():
    variants = {"torch_fp32": {"p50_ms": 9.0, "agreement": 1.0}, "onnx_fp32": {"p50_ms": 5.0, "agreement": 1.0},
                "onnx_int8": {"p50_ms": 2.0, "agreement": 0.95}}  # fmt: skip
    assert fastest_faithful(variants, 0.99) == "onnx_fp32"
    assert fastest_faithful(variants, 0.9) == "onnx_int8"
    with pytest.raises(FerbenchError, match="min_agreement"):
        fastest_faithful(variants, 1.5)
