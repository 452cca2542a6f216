"""The study's reference curves on the same axes as ours."""

from __future__ import annotations

import pandas as pd

from behavior_classifier.frequencies import COLUMNS, load_reference, plot_frequencies, reference_for


def test_reference_for_maps_our_condition_names_to_the_study() -> None:
    ref = reference_for(["none", "only_backtracking", "rich/all_strategies_incorrect", "tiny_only_condition"])
    assert set(ref["condition"]) == {
        f"study {model}: {name}" for model in ("llama", "qwen") for name in ("base_ppo", "only_backtracking", "no_positive_all_strategies")
    } & {f"study {m}: {c}" for m in ("llama", "qwen") for c in set(load_reference(m)["condition"])}
    assert list(ref.columns) == list(COLUMNS)
    # Nothing in common: the study's no-priming curve, so there is always something to compare with.
    assert set(reference_for(["empty"], models=("llama",))["condition"]) == {"study llama: base_ppo"}


def test_plot_with_reference_draws_both_on_the_same_axes(tmp_path) -> None:
    ours = load_reference("llama")
    ours = ours[ours["condition"] == "only_backtracking"].assign(condition="only_backtracking")
    ours = ours.assign(**{c: ours[c] * 0.5 for c in ("avg_backtracking", "accuracy")})
    png = plot_frequencies(ours, tmp_path / "ref.png", reference=reference_for(["only_backtracking"]))
    assert png.stat().st_size > 20_000
    # Shares are not in the study's tables: those panels show ours alone, without error.
    plot_frequencies(ours.assign(**{c: 0.5 for c in ours if c.startswith("share_")}), tmp_path / "share.png", metric="share",
                     reference=reference_for(["only_backtracking"]))  # fmt: skip
    assert isinstance(reference_for([]), pd.DataFrame)
