"""The mixed-precision search logic: prefix bisection, group prune, early rejection, and
the local-noise ranking on a model with a sabotaged layer."""

import math

import numpy as np
import pytest

from fixtures.synthetic import cle_net, gaussian_batches, reestimate_bn, sabotage_channels
from qcompiler.precision.mixed_precision import Budget, mixed_precision, prune, smallest_prefix
from qcompiler.precision.variants import VariantBuilder


def _counting(test):
    calls = []

    def wrapped(x):
        calls.append(x)
        return test(x)

    return wrapped, calls


@pytest.mark.parametrize("n", [1, 2, 7, 64, 300])
def test_smallest_prefix_finds_the_threshold_of_a_monotone_test(n):
    for k in sorted({min(k, n) for k in (1, 2, 3, n // 2 or 1, n - 1 or 1, n)}):
        test, calls = _counting(lambda m, k=k: m >= k)
        assert smallest_prefix(n, test) == k
        assert len(calls) <= 2 * math.ceil(math.log2(k + 1)) + 2  # ~2 log2(k), not k
        assert max(calls) <= min(n, 2 * k)  # galloping never evaluates far past the answer


def test_smallest_prefix_without_a_solution():
    test, calls = _counting(lambda m: False)
    assert smallest_prefix(300, test) is None
    assert calls[-1] == 300 and len(calls) <= 10
    assert smallest_prefix(0, lambda m: True) is None


def test_synthetic_additive_noise_problem_meets_budget_with_few_evaluations():
    # output noise = sum of the noise of the quantized layers: a monotone problem whose
    # optimum is known (keep the largest contributors float)
    rng = np.random.default_rng(0)
    noise = np.sort(rng.pareto(1.0, 300))[::-1] * 1e-4
    names = [f"l{i}" for i in range(len(noise))]
    budget = 0.2 * noise.sum()

    def meets(kept):
        return noise.sum() - sum(noise[int(k[1:])] for k in kept) <= budget

    test, calls = _counting(lambda m: meets(names[:m]))
    n = smallest_prefix(len(names), test)
    greedy = next(m for m in range(len(names) + 1) if meets(names[:m]))  # the old one-by-one search
    assert n == greedy and meets(names[:n]) and not meets(names[:n - 1])
    assert len(calls) < greedy / 2 or greedy < 8


def test_prune_requantizes_every_layer_the_budget_allows_and_respects_the_cap():
    # kept layers of which only "c" and "f" are needed
    need = {"c", "f"}
    kept = list("abcdefgh")
    test, calls = _counting(lambda trial: need <= set(trial))
    assert prune(kept, kept, test) == ["c", "f"]
    assert len(calls) < 2 * len(kept)
    # the cap: one trial, the whole group fails, nothing removed
    test, calls = _counting(lambda trial: need <= set(trial))
    assert prune(kept, kept, test, max_trials=1) == kept and len(calls) == 1
    # a run of removable layers costs one test
    test, calls = _counting(lambda trial: True)
    assert prune(kept, kept, test) == [] and len(calls) == 1


def test_budget_rejects_partial_results_and_rejects_early_only_far_from_it():
    b = Budget(min_sqnr=30)
    assert not b.ok({"sqnr_db": 40.0, "cosine": 1.0, "partial": True})
    assert b.clearly_fails({"sqnr_db": 20.0, "cosine": 0.9})
    assert not b.clearly_fails({"sqnr_db": 28.0, "cosine": 0.99})
    assert not Budget(max_drop=0.5, metric=lambda o, b: 1.0).clearly_fails({"sqnr_db": -5.0, "cosine": 0.0})


@pytest.fixture(scope="module")
def sabotaged_deep():
    m = cle_net(blocks=8, hw=16)
    data = gaussian_batches(m, 4, batch=2)
    m = reestimate_bn(m, data)
    clean = VariantBuilder(m, "x86", lambda: iter(data), eval_batches=2).evaluate([])["sqnr_db"]
    return sabotage_channels(m, "block6.dw.conv"), data, clean


def test_local_ranking_puts_the_sabotaged_pair_first(sabotaged_deep):
    from qcompiler.analysis.sensitivity import local_ranking

    m, data, _ = sabotaged_deep
    vb = VariantBuilder(m, "x86", lambda: iter(data), eval_batches=2)
    r = local_ranking(vb)
    assert set(r["ranking"][:2]) == {"conv_act:block6.dw.conv", "conv_act:block6.project.conv"}
    assert vb.evaluations == 0  # no variant builds


def test_search_measures_fewer_candidates_than_the_analysis(sabotaged_deep):
    m, data, clean = sabotaged_deep
    fast = mixed_precision(m, "x86", lambda: iter(data), min_sqnr=clean - 1.0, eval_batches=2)
    full = mixed_precision(m, "x86", lambda: iter(data), min_sqnr=clean - 1.0, eval_batches=2, ranking="analysis")
    assert fast["reached"] and fast["result"]["sqnr_db"] >= clean - 1.0 and fast["ranking_from"] == "local noise"
    assert full["reached"] and full["ranking_from"] == "new analysis"
    layers = len(VariantBuilder(m, "x86", lambda: iter(data), eval_batches=2).kernels)
    assert full["evaluations"] > 2 * layers and fast["evaluations"] < layers
    assert len(fast["kept_float"]) <= len(full["kept_float"]) + 1
    assert fast["int8_mac_share"] >= 0.9


def test_early_rejection_is_partial_and_remeasured_in_full(sabotaged_deep):
    m, data, clean = sabotaged_deep
    vb = VariantBuilder(m, "x86", lambda: iter(data), eval_batches=4)
    r = vb.evaluate([], early_reject=lambda part: True)
    assert r["partial"] and r["batches"] == 2 and vb.early_rejections == 1
    full = vb.evaluate([])
    assert not full.get("partial") and vb.evaluations == 2
    assert vb.evaluate([], early_reject=lambda part: True) is full  # cached full result
