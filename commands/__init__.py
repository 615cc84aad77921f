"""The top layer: the commands people run (``sluice …``) and the tools of a developer's machine
(the dev runner, the local Kafka broker, the load generator). It may import every other package;
nothing imports it but the tests and the benchmarks (pyproject.toml's import-linter contract)."""
