"""DVC stage `teach@<teacher>`: a teacher's outputs, computed once. Runs the checkpoint that
`distill.teachers.<teacher>` names (models/train/ or models/finetune/) over every prepared image in each
test-time-augmentation view and caches the logits in data/teachers/<teacher>.npz, so that a change of a
student's recipe never reruns its teachers."""

from ferbench import params as P
from ferbench.cli import backbone_argument, run_stage
from ferbench.paths import PREPARED_DIR, RunOutputs, teacher_file
from ferbench.training.settings import backbone_spec, resolve_device
from ferbench.training.teachers import TrainedTeacher, cache_teacher_outputs


def main() -> None:
    name = backbone_argument("teach", __doc__, where="distill.teachers")
    params = P.load_params()
    stage = params.teacher_stage(name)
    eval_batch_size = (params.train_for(name) if stage == "train" else params.finetune_for(name)).eval_batch_size
    outputs = cache_teacher_outputs(
        TrainedTeacher(backbone_spec(params, name), stage, RunOutputs(stage, name).checkpoint),
        list(params.data.classes),
        PREPARED_DIR,
        params.tta,
        eval_batch_size,
        resolve_device(params.device),
        teacher_file(name),
    )
    accuracy = outputs.metadata.accuracy
    print(
        f"teach@{name}: {stage} checkpoint over {outputs.metadata.view_count} view(s) of every image; "
        f"val {accuracy['val'].views:.4f}, test {accuracy['test'].views:.4f} -> {teacher_file(name)}"
    )


if __name__ == "__main__":
    run_stage(main, "teach")
