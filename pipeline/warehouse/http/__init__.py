"""The parts of ``sluice warehouse`` (:mod:`pipeline.warehouse.serve`): how a request's SQL and
data are split (:mod:`.statement`), its compressions (:mod:`.codec`), the engine and its
sessions (:mod:`.engine`), and errors as ClickHouse writes them (:mod:`.errors`)."""
