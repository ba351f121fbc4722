"""DVC stage `latency@<backbone>`: CPU latency (batch 1) of the fine-tuned model in each runtime variant.

Variants: PyTorch eager fp32, ONNX Runtime fp32, int8 with dynamic quantization and int8 with static
quantization calibrated on `latency.calibration_images` train images, each with its agreement with
fp32 predictions on val, and timed again on the test-time-augmentation views when `tta` has more
than one. `metrics/latency/<backbone>.json` holds the p50/p90/p99 per variant and the pick;
`reports/details/latency/<backbone>.json` everything measured. Latency is a property of the
architecture, so the numbers also stand for the same backbone after `train`.
"""

import tempfile
from pathlib import Path

from ferbench import params as P
from ferbench.cli import backbone_argument, run_stage
from ferbench.data.prepared import load_split
from ferbench.latency import calibration_from_params, latency_headline, latency_report
from ferbench.metrics import write_json
from ferbench.models.classifier import load_classifier
from ferbench.paths import DETAILS_DIR, FINETUNE_MODELS, LATENCY_METRICS, PREPARED_DIR
from ferbench.stage_params import backbone_spec, tta_config


def main() -> None:
    name = backbone_argument("latency", __doc__)
    params = P.load_params()
    spec = backbone_spec(params, name)
    classes = P.get(params, "data.classes", list)
    model = load_classifier(spec, FINETUNE_MODELS / f"{name}.pt", len(classes))
    val = load_split(PREPARED_DIR / "val.npz")
    calibration = calibration_from_params(params, load_split(PREPARED_DIR / "train.npz"))
    with tempfile.TemporaryDirectory() as scratch:
        report = latency_report(
            model,
            Path(scratch),
            val.images,
            val.labels,
            threads=P.get(params, "latency.threads", int),
            warmup=P.get(params, "latency.warmup", int),
            runs=P.get(params, "latency.runs", int),
            min_agreement=float(P.get(params, "latency.min_agreement")),
            tta_views=tta_config(params).views,
            calibration=calibration,
        )
    report = {"backbone": name, "model": str(FINETUNE_MODELS / f"{name}.pt"), **report}
    write_json(DETAILS_DIR / "latency" / f"{name}.json", report)
    write_json(LATENCY_METRICS / f"{name}.json", latency_headline(report))
    line = ", ".join(
        f"{variant} p50 {result['p50_ms']:.2f} ms (agreement {result['agreement']:.3f})"
        for variant, result in report["variants"].items()
    )
    print(f"latency@{name}: {line}; fastest faithful: {report['fastest_faithful']}")


if __name__ == "__main__":
    run_stage(main, "latency")
