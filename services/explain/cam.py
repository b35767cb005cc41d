"""Class activation maps for the bundle's trained models, with the ``grad-cam`` library. Imports torch.

- Logistic regression is differentiable (:class:`~services.explain.heads.LogisticHead`): Grad-CAM, the
  study's method, with the class's calibrated logit as the target.
- SVM, random forest, XGBoost and k-means are not: Ablation-CAM, gradient-free, whose target is the
  model's own calibrated probability for the class (:class:`~services.explain.heads.ProbabilityHead`).
  Two engines compute it: ``pooled`` (the default, :mod:`services.explain.ablation`: the library's
  result from the pooled features, one model call) and ``library`` (the library's ``AblationCAM``,
  one pooled copy of the maps per channel; 10-37x slower, kept as the reference).

The library is handed the backbone's head only (see :mod:`services.explain.network`): the maps of the last
conv block are computed once, then the library hooks the block's activation. Every call builds its own
head and CAM object and releases the hooks on exit, so nothing accumulates across requests and calls on
different threads never share a hooked module.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from pytorch_grad_cam import AblationCAM, GradCAM, GradCAMPlusPlus, ablation_cam
from pytorch_grad_cam.ablation_layer import AblationLayer
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from hemascope.bundle import LoadedBundle
from hemascope.errors import FailedPrecondition, InvalidArgument, NotFound, echo
from services.explain.ablation import pooled_ablation
from services.explain.heads import LogisticHead, ProbabilityHead, is_differentiable
from services.explain.network import SplitBackbone

# Ablation-CAM draws a tqdm progress bar on stderr for every image; a service must not. The library offers
# no switch, so its module-level ``tqdm`` reference is pointed at a pass-through.
ablation_cam.tqdm = types.SimpleNamespace(tqdm=lambda iterable, *args, **kwargs: iterable)

GRADCAM = "gradcam"
GRADCAM_PLUS_PLUS = "gradcam++"
ABLATIONCAM = "ablationcam"
GRADIENT_METHODS: Mapping[str, Callable[..., Any]] = {GRADCAM: GradCAM, GRADCAM_PLUS_PLUS: GradCAMPlusPlus}
METHODS = (GRADCAM, GRADCAM_PLUS_PLUS, ABLATIONCAM)
POOLED, LIBRARY = "pooled", "library"
ABLATION_ENGINES = (POOLED, LIBRARY)
#: What cache keys call a method computed by an engine. An entry is reused only under the same name, so a
#: new engine (or a change to one that moves its output) gets a new name here and never serves maps
#: cached from another. The library engine keeps the name its entries have always had.
_REVISIONS = {(ABLATIONCAM, POOLED): f"{ABLATIONCAM}.{POOLED}-1"}


class ZeroAblationLayer(AblationLayer):  # type: ignore[misc]
    """Ablation by zeroing one channel per batch row, vectorised.

    The library's layer recomputes the minimum of the whole batch for every row to decide between zero and
    a large negative value; the target layers here end in ReLU/ReLU6, whose minimum is 0, so zeroing is
    the paper's ablation and the per-row scan only costs time (seconds per image on a 1280-channel block).
    """

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        output: torch.Tensor = self.activations
        rows = torch.arange(output.size(0))
        output[rows, torch.as_tensor(self.indices[: output.size(0)], dtype=torch.long)] = 0
        return output


@dataclass(frozen=True)
class CamResult:
    """One explanation, in the prepared image's frame."""

    heatmap: NDArray[np.float32]  # h x w (the last conv block's grid), min-max scaled to [0, 1]
    class_index: int  # the class explained
    predicted_index: int  # the model's most probable class
    probabilities: NDArray[np.float64]  # calibrated, every class, bundle order
    method: str

    @property
    def probability(self) -> float:
        return float(self.probabilities[self.class_index])


def default_method(bundle: LoadedBundle, model: str) -> str:
    return GRADCAM if is_differentiable(bundle, model) else ABLATIONCAM


class CamExplainer:
    """Explains one bundle's models on one backbone."""

    def __init__(
        self,
        backbone: SplitBackbone,
        bundle: LoadedBundle,
        *,
        ablation_batch: int = 256,
        ablation_engine: str = POOLED,
    ) -> None:
        if ablation_engine not in ABLATION_ENGINES:
            raise ValueError(f"unknown Ablation-CAM engine {ablation_engine!r}; known: {ABLATION_ENGINES}")
        self.backbone = backbone
        self.bundle = bundle
        self.ablation_batch = ablation_batch
        self.ablation_engine = ablation_engine
        self._logistic = {
            name: LogisticHead(bundle, name) for name in bundle.models if is_differentiable(bundle, name)
        }

    def classifier(self, model: str, method: str) -> torch.nn.Module:
        """The head a CAM method targets: logits for gradient methods, probabilities otherwise."""
        if method in GRADIENT_METHODS:
            head = self._logistic.get(model)
            if head is None:
                raise FailedPrecondition(
                    f"{method} needs gradients and model {echo(model)} is not differentiable; "
                    f"use {ABLATIONCAM}",
                    reason="NOT_DIFFERENTIABLE",
                    field="method",
                )
            return head
        return ProbabilityHead(self.bundle, model)

    def check(self, model: str, method: str | None) -> str:
        """The method to use for ``model`` (NotFound / InvalidArgument for unknown names)."""
        if model not in self.bundle.models:
            known = ", ".join(self.bundle.models)
            raise NotFound(f"unknown model {echo(model)}; this bundle has: {known}", reason="UNKNOWN_MODEL")
        chosen = method or default_method(self.bundle, model)
        if chosen not in METHODS:
            raise InvalidArgument(
                f"unknown method {echo(chosen)}; known: {', '.join(METHODS)}", field="method"
            )
        self.classifier(model, chosen)  # refuses gradient methods on non-differentiable models
        return chosen

    def revision(self, method: str) -> str:
        """``method`` as cache keys name it with this explainer's engine (see ``_REVISIONS``)."""
        engine = self.ablation_engine if method == ABLATIONCAM else ""
        return _REVISIONS.get((method, engine), method)

    def maps(self, prepared: NDArray[np.uint8]) -> torch.Tensor:
        """The last conv block's pre-activation maps for prepared ``N x size x size x 3`` pixels."""
        with torch.inference_mode():
            maps = self.backbone.maps(
                self.backbone.normalise(torch.from_numpy(np.array(prepared, dtype=np.uint8)))
            )
        return maps.clone()  # a normal tensor (not an inference one), so autograd may track it

    def explain_maps(
        self, maps: torch.Tensor, model: str, class_index: int | None, method: str | None = None
    ) -> CamResult:
        """One image's explanation from its maps (``1 x C x h x w``)."""
        chosen = self.check(model, method)
        head = self.backbone.head(self.classifier(model, chosen))
        ablation = None
        if chosen == ABLATIONCAM and self.ablation_engine == POOLED:
            ablation = pooled_ablation(head, maps.detach(), self.bundle, model)
            probabilities = ablation.probabilities  # from the same model call as the ablated scores
        else:
            with torch.no_grad():
                pooled = head.pooled(maps).numpy().astype(np.float64)
            probabilities = self.bundle.models[model].proba(self.bundle.scale(pooled))[0]
        predicted = int(np.argmax(probabilities))
        target = predicted if class_index is None else class_index
        if not 0 <= target < len(probabilities):
            raise InvalidArgument(f"class index {target} out of range", field="target_class")
        # A frozen backbone gives maps without a gradient path; Grad-CAM's gradient hook only fires on
        # tensors that require grad, so the maps are made a leaf that does.
        inputs = maps.detach().clone().requires_grad_(chosen in GRADIENT_METHODS)
        if ablation is not None:
            heat = ablation.heatmap(target)[None]
        elif chosen in GRADIENT_METHODS:
            cam_class = GRADIENT_METHODS[chosen]
            with cam_class(model=head, target_layers=[head.target_layer]) as cam:
                heat = cam(input_tensor=inputs, targets=[ClassifierOutputTarget(target)])
        else:
            with AblationCAM(
                model=head,
                target_layers=[head.target_layer],
                ablation_layer=ZeroAblationLayer(),
                batch_size=self.ablation_batch,
            ) as cam:
                heat = cam(input_tensor=inputs, targets=[ClassifierOutputTarget(target)])
        heatmap = np.nan_to_num(np.asarray(heat[0], dtype=np.float32), nan=0.0)
        return CamResult(heatmap, target, predicted, probabilities, chosen)

    def explain(
        self,
        prepared: NDArray[np.uint8],
        model: str,
        class_index: int | None = None,
        method: str | None = None,
    ) -> CamResult:
        """Explains one prepared ``size x size x 3`` uint8 image."""
        return self.explain_maps(self.maps(prepared[None]), model, class_index, method)
