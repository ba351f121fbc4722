"""DVC stage `embed@<backbone>`: frozen-backbone features of every split, computed once (split
across the data-parallel processes when `distributed` asks for several; rank 0 writes)."""

import torch

from ferbench import params as P
from ferbench.cli import backbone_argument, run_stage
from ferbench.distributed import start, stop
from ferbench.embeddings import compute_embeddings, load_device_splits, save_embeddings
from ferbench.models.backbones import build_backbone
from ferbench.paths import FEATURES_DIR, PREPARED_DIR
from ferbench.stage_params import backbone_spec, device, distributed_config


def main() -> None:
    name = backbone_argument("embed", __doc__)
    params = P.load_params()
    spec = backbone_spec(params, name)
    group, target = start(device(params), distributed_config(params).timeout_s)
    torch.manual_seed(P.get(params, "seed", int))
    backbone = build_backbone(spec)
    flip = bool(P.get(params, "feature_extract.flip"))
    splits = load_device_splits(PREPARED_DIR, target)
    arrays = compute_embeddings(backbone, splits, flip, P.get(params, "embed.batch_size", int), target, group)
    stop(group)
    if not group.is_main:
        return
    metadata = {"backbone": spec.name, "feature_dim": backbone.feature_dim, "input_size": backbone.input_size}
    save_embeddings(FEATURES_DIR / f"{spec.name}.npz", arrays, metadata)
    print(f"embed@{spec.name}: {backbone.feature_dim}-d features, train views {arrays['train'].shape[0]}")


if __name__ == "__main__":
    run_stage(main, "embed")
