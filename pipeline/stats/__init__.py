"""Experiment statistics (issue 23): pure functions from per-variant sufficient statistics to results.

The data path (SQL → ``VariantSums``) and the renderers (CLI, HTTP, page) sit outside; this package
never sees a row or a request. docs/statistics.md states each formula with its source.
"""

from pipeline.stats.analysis import Analysis, VariantResult, analyze
from pipeline.stats.srm import srm_p_value
from pipeline.stats.sums import KINDS, Kind, Options, VariantSums

__all__ = ["KINDS", "Analysis", "Kind", "Options", "VariantResult", "VariantSums", "analyze", "srm_p_value"]
