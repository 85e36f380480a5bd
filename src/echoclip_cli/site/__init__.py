"""A site's own labels and heads: harvested labels, heads fitted on its embeddings, intervals, abstention.

The one seam of this family of parts; the use cases (``echoclip_cli.api.site``) and the zero-shot
records (``echoclip_cli.tasks``) import from here only.

- **Labels** (:mod:`.labels`, :mod:`.sr`, :mod:`.report_text`, :mod:`.harvest`): LVEF with its
  method and unit from measurement SRs (any pydicom ``Dataset``: :func:`labels_from_dataset`),
  EF and devices from report text (:func:`labels_from_text`), placed on studies
  (:class:`StudyContext`) and settled (:func:`settle`: each study's label, conflicts reported);
  :func:`harvest_paths` walks files.
- **Heads** (:mod:`.linear`, :mod:`.conformal`, :mod:`.fitting`, :mod:`.head`): ridge or logistic
  regression on video embeddings (+ the zero-shot score), regularisation by CV, split-conformal
  intervals or sets, a distance beyond which an input abstains; one safetensors file.
"""

from .apply import HeadValue, apply_head
from .context import StudyContext, context_of
from .embeddings import EmbeddingTable, from_store, read_embeddings
from .features import zero_shot_feature
from .fitting import FitMetric, FitResult, TrainingSet, fit_head, training_set
from .harvest import harvest_paths
from .head import Head, HeadPredictions
from .labels import EF, LabelRecord, settle
from .report_text import labels_from_text
from .sr import labels_from_dataset

__all__ = [
    "EF", "EmbeddingTable", "FitMetric", "FitResult", "Head", "HeadPredictions", "HeadValue", "LabelRecord",
    "StudyContext", "TrainingSet", "apply_head", "context_of", "fit_head", "from_store", "harvest_paths",
    "labels_from_dataset", "labels_from_text", "read_embeddings", "settle", "training_set", "zero_shot_feature",
]
