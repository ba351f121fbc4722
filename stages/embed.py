"""DVC stage `embed@<backbone>`: frozen-backbone features of every split, computed once (split
across the data-parallel processes when `distributed` asks for several; rank 0 writes)."""

import torch

from ferbench import params as P
from ferbench.cli import backbone_argument, run_stage
from ferbench.models.backbones import build_backbone
from ferbench.paths import PREPARED_DIR, features_file
from ferbench.records import EmbeddingRecord
from ferbench.training.distributed import join_group, leave_group
from ferbench.training.embeddings import compute_embeddings, load_device_splits, save_embeddings
from ferbench.training.settings import backbone_spec, resolve_device, tune_for


def main() -> None:
    name = backbone_argument("embed", __doc__)
    params = P.load_params()
    spec = backbone_spec(params, name)
    group, device = join_group(resolve_device(params.device), params.distributed.timeout_s)
    tune_for(device)
    torch.manual_seed(params.seed)
    backbone = build_backbone(spec)
    splits = load_device_splits(PREPARED_DIR, device)
    arrays = compute_embeddings(backbone, splits, params.feature_extract.flip, params.embed.batch_size, device, group)
    leave_group(group)
    if not group.is_main:
        return
    record = EmbeddingRecord(backbone=spec.name, feature_dim=backbone.feature_dim, input_size=backbone.input_size)
    save_embeddings(features_file(spec.name), arrays, record)
    print(f"embed@{spec.name}: {backbone.feature_dim}-d features, train views {arrays['train'].shape[0]}")


if __name__ == "__main__":
    run_stage(main, "embed")
