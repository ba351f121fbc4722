"""DVC stage `latency@<backbone>`: CPU latency (batch 1) of the fine-tuned model in each runtime variant.

Variants: PyTorch eager fp32, ONNX Runtime fp32, int8 with dynamic quantization and int8 with static
quantization with activation ranges measured on `latency.int8_range_images` train images, each with its agreement with
fp32 predictions on val, and timed again on the test-time-augmentation views when `tta` has more
than one. `metrics/latency/<backbone>.json` holds the p50/p90/p99 per variant and the pick;
`reports/details/latency/<backbone>.json` everything measured. Latency is a property of the
architecture, so the numbers also stand for the same backbone after `train`.
"""

from ferbench import params as P
from ferbench.cli import backbone_argument, run_stage
from ferbench.data.prepared import load_split
from ferbench.models.classifier import load_classifier
from ferbench.paths import LATENCY_METRICS, PREPARED_DIR, RunOutputs, stage_details
from ferbench.records import write_headline, write_record
from ferbench.shipping.latency import LatencySource, latency_report, range_sample_from_params
from ferbench.training.settings import backbone_spec


def main() -> None:
    name = backbone_argument("latency", __doc__)
    params = P.load_params()
    checkpoint = RunOutputs("finetune", name).checkpoint
    model = load_classifier(backbone_spec(params, name), checkpoint, len(params.data.classes))
    ranges = range_sample_from_params(params, load_split(PREPARED_DIR / "train.npz"))
    report = latency_report(
        model,
        LatencySource(name, str(checkpoint)),
        load_split(PREPARED_DIR / "val.npz"),
        params.latency,
        params.tta.views,
        ranges,
    )
    write_record(stage_details("latency", name), report)
    write_headline(LATENCY_METRICS / f"{name}.json", report.headline())
    line = ", ".join(
        f"{variant} p50 {result.p50_ms:.2f} ms (agreement {result.agreement:.3f})"
        for variant, result in report.variants.items()
    )
    print(f"latency@{name}: {line}; fastest faithful: {report.fastest_faithful}")


if __name__ == "__main__":
    run_stage(main, "latency")
