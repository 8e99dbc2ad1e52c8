"""The run's data: the split, the label map and the files checked before the first step
(``run_data``, re-exported here), the data checker and its manifest (``check``), and
``crossres-pack`` (``pack``)."""

from crossres_dist.data.run_data import (
    FileReport,
    RunData,
    check_degradations,
    check_identities,
    check_run_files,
    check_same_split,
    check_sizes,
    configured_ranges,
    excluded_during_run,
    label_map,
    load_manifest,
    loader_for,
    prepare_run_data,
    record_lineage,
    report_files,
    undecodable,
    validation_samples,
    view_settings,
)

__all__ = [
    "FileReport",
    "RunData",
    "check_degradations",
    "check_identities",
    "check_run_files",
    "check_same_split",
    "check_sizes",
    "configured_ranges",
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
