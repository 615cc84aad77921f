"""The statistics core's result as scripts read it: issue 23 item 6's JSON names."""

from __future__ import annotations

import msgspec

from pipeline.stats import Options, VariantSums, analyze


def test_json_carries_the_names_scripts_depend_on() -> None:
    control = VariantSums("control", 1000, 120, 120, 300, 300, 60)
    treatments = [VariantSums("green", 1010, 150, 150, 310, 310, 70), VariantSums("blue", 990, 118, 118, 290, 290, 55)]
    result = analyze(control, treatments, Options(kind="conversion", cuped=True))
    decoded = msgspec.json.decode(msgspec.json.encode(result))
    assert {"sequential", "cuped", "srm_p_value", "variants"} <= decoded.keys()
    assert decoded["sequential"] is True and decoded["cuped"] is True
    assert 0.0 < decoded["variance_reduction"] < 1.0 and decoded["theta"] > 0
    assert [v["variant"] for v in decoded["variants"]] == ["control", "green", "blue"]
    assert [v["control"] for v in decoded["variants"]] == [True, False, False]
    for variant in decoded["variants"]:
        assert {"variant", "control", "units", "mean", "variance"} <= variant.keys()
    for variant in decoded["variants"][1:]:
        assert isinstance(variant["ci_abs"], list) and len(variant["ci_abs"]) == 2
        assert isinstance(variant["ci_rel"], list) and len(variant["ci_rel"]) == 2
        assert variant["ci_abs"][0] < variant["lift_abs"] < variant["ci_abs"][1]
        assert variant["ci_rel"][0] < variant["lift_rel"] < variant["ci_rel"][1]
        assert 0.0 < variant["p_value"] <= 1.0 and variant["error"] is None
    assert decoded["variants"][0]["lift_abs"] is None  # the control has no lift


def test_sums_decode_from_json_with_defaults() -> None:
    sums = msgspec.json.decode(b'{"variant": "a", "n": 3, "sum": 2, "sum_squares": 2}', type=VariantSums)
    assert sums == VariantSums("a", 3, 2.0, 2.0)
    assert (sums.d_sum, sums.d_sum_squares, sums.sum_of_products, sums.multi_exposed) == (0.0, 0.0, 0.0, 0)
