"""One library call per use case; the command line is a thin face over these.

    >>> import echoclip_cli
    >>> model = echoclip_cli.load_model("echo-clip")
    >>> for record in echoclip_cli.predict_ef(model, ["study/a4c.dcm"]):
    ...     print(record.level, record.study, record.ef)

Each call takes the loaded model first (:func:`load_model`), its inputs (files or folders) or a
store, one :class:`~echoclip_cli.options.RunOptions` value and the few arguments of its own;
checks them before any work; and streams typed records (:mod:`echoclip_cli.records`,
:mod:`echoclip_cli.tasks`). A failed input is a record with ``error`` set; only a wrong call raises
(:class:`~echoclip_cli.errors.UsageError`). Nothing here prints: progress and notes reach a caller
through the optional ``progress`` hook (:class:`Progress`).

One module per use case; each imports only light modules at the top, so that checking arguments
never waits for torch.
"""

from .common import Found, Progress, find, inputs_or_store, store_header, weights_for
from .embed import embed, embed_files
from .explain import FrameMap, check_explain, explain
from .holdings import forget_store, holdings, remember_store, remembered_stores
from .load import device_for_rank, load_model
from .report import ReportContent, report
from .retrieval import PATIENT_TYPES, check_search, match_patients, search, search_reports
from .site import check_fit, fit, harvest_labels, load_head
from .zeroshot import check_tasks, detect_devices, predict_ef, zero_shot

__all__ = [
    "PATIENT_TYPES", "FrameMap", "Found", "Progress", "ReportContent", "check_explain", "check_fit", "check_search",
    "check_tasks", "detect_devices", "device_for_rank", "embed", "embed_files", "explain", "find", "fit",
    "forget_store", "harvest_labels", "holdings", "inputs_or_store", "load_head", "load_model", "match_patients",
    "predict_ef", "remember_store", "remembered_stores", "report", "search", "search_reports", "store_header",
    "weights_for", "zero_shot",
]
