"""What a classifier is, without torch: its backbone (`BackboneSpec`) and the test-time-augmentation views it
averages over (`TTAConfig`). The params (`schema`) hold the same types, a model card records them for
serving; both are validated here, since a card is untrusted input. On the ground floor, below the params
schema and the models that both use them.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from ferbench.constants import BACKBONE_SOURCES, INPUT_SIZE_RANGE, TTA_SHIFT_PIXELS_RANGE, TTA_SHIFTS


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class BackboneFields(Spec):
    """What names a backbone and its weights: `params.yaml: backbones.<name>` (`schema.BackboneSection`, with
    its training overrides) and a model card's `spec` (`BackboneSpec`, with its name) both hold these."""

    source: Literal[BACKBONE_SOURCES]
    model: Annotated[str, Field(min_length=1)]
    pretrained: bool
    weights: str | None  # local file/folder of weights; None: the library's own (cached) download
    input_size: Annotated[int, Field(ge=INPUT_SIZE_RANGE[0], le=INPUT_SIZE_RANGE[1])] | None  # None: the weights' size


SPEC_KEYS: tuple[str, ...] = tuple(BackboneFields.model_fields)  # params.yaml: backbones.<name>


class BackboneSpec(BackboneFields):
    """A backbone as `params.yaml: backbones.<name>` describes it (and a model card records it)."""

    name: Annotated[str, Field(min_length=1)]


Shifts = Literal[TTA_SHIFTS]  # 4: shifted left, right, up, down; 8: and diagonally
ShiftPixels = Annotated[int, Field(ge=TTA_SHIFT_PIXELS_RANGE[0], le=TTA_SHIFT_PIXELS_RANGE[1])]


class TTAConfig(Spec):
    """Test-time augmentation: the views whose logits are averaged (`params.yaml: tta`, a card's `tta`)."""

    flip: bool  # the mirrored image
    shifts: Shifts
    shift_pixels: ShiftPixels

    @property
    def offsets(self) -> list[tuple[int, int]]:
        """(dy, dx) of each shifted view."""
        step = self.shift_pixels
        sides = [(0, -step), (0, step), (-step, 0), (step, 0)]
        corners = [(-step, -step), (-step, step), (step, -step), (step, step)]
        return (sides + corners)[: self.shifts]

    @property
    def views(self) -> int:
        return 1 + int(self.flip) + self.shifts

    @property
    def enabled(self) -> bool:
        return self.views > 1


NO_TTA = TTAConfig(flip=False, shifts=0, shift_pixels=2)  # one view: the image as it is
