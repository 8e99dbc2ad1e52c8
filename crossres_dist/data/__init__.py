"""The run's data: the split, the label map and the lineage (``run_data``), the files checked
before the first step and those that fail during it (``file_checks``), the configuration's
views and loader (``views``), the data checker and its manifest (``check``), and ``crossres-pack``
(``pack``). The face re-exports the first three."""

from crossres_dist.data.file_checks import (
    FileReport,
    check_run_files,
    excluded_during_run,
    load_manifest,
    report_files,
    undecodable,
)
from crossres_dist.data.run_data import (
    RunData,
    ValidationChoice,
    check_identities,
    check_same_split,
    check_sizes,
    label_map,
    prepare_run_data,
    record_lineage,
    validation_samples,
)
from crossres_dist.data.views import loader_for, view_settings

__all__ = [
    "FileReport",
    "RunData",
    "ValidationChoice",
    "check_identities",
    "check_run_files",
    "check_same_split",
    "check_sizes",
    "excluded_during_run",
    "label_map",
    "load_manifest",
    "loader_for",
    "prepare_run_data",
    "record_lineage",
    "report_files",
    "undecodable",
    "validation_samples",
    "view_settings",
]
