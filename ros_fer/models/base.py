"""What every method shares: the backbone, the label set, the crop levels, and the contract the
text bank, training, export and the node rely on."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..backbone import Backbone
from ..errors import InputShapeError
from ..head import Head
from ..labels import LabelSet
from ..prompts import PromptFile, check_levels


@dataclass
class Output:
    """A training forward: logits [B, C], each loss term (their sum is `loss`) and diagnostics."""

    logits: torch.Tensor
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # logged, not optimised

    @property
    def loss(self) -> torch.Tensor:
        return torch.stack(list(self.losses.values())).sum()


class FerModel(nn.Module):
    """Base of MLPER, MPA-FER and zero-shot CLIP.

    Image side: `encode_image(crops [B, L, 3, S, S])` -> dict of features, L = len(levels), crops
    normalised with the backbone's mean/std. Text side: `text_features()` -> the class features a text
    bank stores. Head: `classify(image features, text features)` -> logits [B, C].
    """

    method: str = ""

    def __init__(self, backbone: Backbone, labels: LabelSet, prompts: PromptFile, config: dict):
        super().__init__()
        self.clip = backbone.clip
        self.backbone = backbone  # plain attribute too: spec, tokenizer, weights id, preprocessing
        self.labels = labels
        self.prompts = prompts
        self.config = config
        self.levels = check_levels(config.get("levels", ["face"]))
        self.checkpoint_sha256: str | None = None  # set when loaded from a trained checkpoint

    # -- contract --------------------------------------------------------------------------
    def encode_crops(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-crop features of normalised crops [N, 3, S, S] of any level: each tensor [N, ...]. The
        exported image side runs this once per distinct crop (a frame's context crop serves every person)."""
        raise NotImplementedError

    def combine(self, per_level: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The image outputs from each person's per-crop features arranged by level: tensors [B, L, ...]."""
        raise NotImplementedError

    def encode_image(self, crops: torch.Tensor) -> dict[str, torch.Tensor]:
        """Inference features of crops [B, L, 3, S, S]: encode_crops on every crop, then combine."""
        b, n = self.check_crops(crops).shape[:2]
        per_crop = self.encode_crops(crops.flatten(0, 1))
        return self.combine({k: v.view(b, n, *v.shape[1:]) for k, v in per_crop.items()})

    def head(self) -> Head:
        """How image features are scored against text features; the runtime rebuilds it from to_dict()."""
        raise NotImplementedError

    def image_outputs(self) -> tuple[str, ...]:
        """The keys `encode_image` returns at inference, in order (the exported graph's outputs)."""
        return ("global",)

    def classify(self, image: dict[str, torch.Tensor], text: dict[str, torch.Tensor]) -> torch.Tensor:
        """The head with the live (possibly trainable) temperature."""
        head = self.head()
        return Head(head.kind, head.text_keys, self.logit_scale, head.top_k)(image, text)

    def text_features(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def forward(self, crops: torch.Tensor, targets: torch.Tensor | None = None) -> Output:
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------
    @property
    def logit_scale(self) -> torch.Tensor:
        return self.clip.logit_scale.exp()

    def check_crops(self, crops: torch.Tensor) -> torch.Tensor:
        size = self.backbone.image_size
        want = (len(self.levels), 3, size, size)
        if crops.ndim != 5 or tuple(crops.shape[1:]) != want:
            raise InputShapeError(
                f"{self.method} expects crops [batch, {want[0]} levels {list(self.levels)}, 3, {size}, {size}], "
                f"got {list(crops.shape)}"
            )
        return crops

    def predict(self, crops: torch.Tensor, text: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Class probabilities [B, C] against `text` (a bank's tensors) or freshly encoded text."""
        text = self.text_features() if text is None else text
        return self.classify(self.encode_image(crops), text).softmax(dim=-1)

    def identity(self) -> dict:
        """What a text bank must agree with to be used with this model."""
        return {
            "method": self.method,
            "backbone": self.backbone.spec.name,
            "weights": self.backbone.weights,
            "embed_dim": self.backbone.embed_dim,
            "label_set": self.labels.name,
            "labels": list(self.labels.classes),
            "levels": list(self.levels),
            "checkpoint": self.checkpoint_sha256,
            "prompts_sha256": self.prompts.sha256,
        }

    def needs_prototypes(self) -> bool:
        """True while class prototypes this model trains against are still to be built (MPA-FER with
        `prototypes: precomputed`); the Trainer builds them before the first epoch."""
        return False

    def text_keys(self) -> tuple[str, ...]:
        """The text-feature tensors `classify` reads (a text bank must hold them)."""
        return self.head().text_keys

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def trainable_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.trainable_parameters())

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """Sentence features [N, D] (not normalised) through the model's own text encoder."""
        return self.clip.encode_text(self.backbone.tokenize(texts))
