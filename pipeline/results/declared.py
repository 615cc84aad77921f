"""What an experiment's own configuration declares, for its results: the split its variants were
allocated (the SRM test's expected weights), its control, its saved metrics.

- Traffical (``sluice config put``): a policy whose id is the experiment's, in any of the org's
  bundles; each allocation's weight is the number of buckets of its ``bucketRange`` (inclusive),
  summed over allocations of one name.
- Xaiku (``sluice experiments put``): the experiment's variants and their ``weight`` (5 when
  missing, as the SDK reads it); the variant marked ``control``.

Unknown: equal weights (``None``), control chosen by name.
"""

from __future__ import annotations

from typing import Any

import msgspec

from pipeline.results.metric import Metric, MetricError, parse
from sluice.configs import ConfigStore


class Declared(msgspec.Struct, frozen=True):
    weights: dict[str, float] | None = None
    control: str | None = None
    metrics: tuple[Metric, ...] = ()
    source: str = ""
    """Where the weights came from: 'traffical', 'xaiku' or '' (equal)."""


def declared(configs: ConfigStore | None, org_id: str, experiment_id: str) -> Declared:
    if configs is None:
        return Declared()
    saved = configs.metrics.get((org_id, experiment_id))
    metrics = tuple(_parsed(saved.metrics)) if saved else ()
    xaiku = configs.experiments_of(org_id, [experiment_id]).get(experiment_id)
    if xaiku is not None:
        variants = msgspec.json.decode(xaiku.variants)
        weights = {str(v["id"]): float(v.get("weight", 5.0)) for v in variants if isinstance(v, dict) and "id" in v}
        control = next((str(v["id"]) for v in variants if isinstance(v, dict) and v.get("control")), None)
        return Declared(weights or None, control, metrics, "xaiku")
    for (org, _, _), bundle in sorted(configs.bundles.items()):
        allocated = _policy_weights(msgspec.json.decode(bundle.bundle), experiment_id) if org == org_id else None
        if allocated:
            return Declared(allocated, None, metrics, "traffical")
    return Declared(metrics=metrics)


def _policy_weights(bundle: Any, policy_id: str) -> dict[str, float] | None:
    layers = bundle.get("layers") if isinstance(bundle, dict) else None
    for layer in layers if isinstance(layers, list) else []:
        for policy in layer.get("policies", []) if isinstance(layer, dict) else []:
            if isinstance(policy, dict) and policy.get("id") == policy_id:
                weights: dict[str, float] = {}
                for allocation in policy.get("allocations", []):
                    low, high = allocation["bucketRange"]
                    weights[allocation["name"]] = weights.get(allocation["name"], 0.0) + max(0, high - low + 1)
                return weights or None
    return None


def _parsed(texts: list[str]) -> list[Metric]:
    out = []
    for text in texts:
        try:
            out.append(parse(text))
        except MetricError:
            continue  # checked when saved; a later rule never hides the others
    return out
