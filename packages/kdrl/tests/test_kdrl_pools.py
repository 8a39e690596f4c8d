"""The benchmark's building blocks: the partly wrong teacher, paired confidence intervals, weight shares."""

import math

import pytest
import torch

from kdrl.models import create_model
from kdrl.pools import POOLS, PermutedTeacher, paired_ci, weight_shares


def test_permuted_teacher_shifts_exactly_the_given_classes():
    model = create_model("digits_mlp").eval()
    wrong = PermutedTeacher(model, [0, 1, 2, 3, 4], 10).eval()
    x = torch.randn(64, 1, 8, 8)
    with torch.no_grad():
        base, out = model.forward_with_features(x), wrong.forward_with_features(x)
        head = wrong.forward_head(base.feature_map)
    pred, new = base.logits.argmax(1), out.logits.argmax(1)
    expected = torch.where(pred < 5, (pred + 1) % 5, pred)  # 0->1, ..., 4->0; 5..9 unchanged
    assert torch.equal(new, expected)
    assert torch.equal(out.feature_map, base.feature_map) and torch.equal(head, out.logits)
    assert torch.equal(out.logits.sort(1).values, base.logits.sort(1).values)  # a permutation of the scores
    with pytest.raises(ValueError, match="distinct"):
        PermutedTeacher(model, [1, 1], 10)


def test_paired_ci_by_hand():
    ci = paired_ci([1.0, 2.0, 3.0])  # mean 2, sd 1, t_{0.975, 2} = 4.302652729911275
    assert ci["mean"] == pytest.approx(2.0)
    assert ci["half"] == pytest.approx(4.302652729911275 / math.sqrt(3), rel=1e-6)  # table to 7 digits
    assert ci["low"] < 0 < 2 < ci["high"]


def test_weight_shares_skip_warmup_and_normalise_scales():
    shares = weight_shares([[1.0, 1.0, 1.0], [0.2, 0.1, 0.0], [0.5, 0.3, 0.2]])
    assert shares == pytest.approx([(2 / 3 + 0.5) / 2, (1 / 3 + 0.3) / 2, 0.1])


def test_pools_have_the_three_roles_and_different_architectures():
    for spec in POOLS.values():
        assert [t.role for t in spec.teachers] == ["strong", "weak", "partly_wrong"]
        assert len({t.model for t in spec.teachers}) == 3
        assert spec.teachers[1].train_fraction < 1 and spec.teachers[2].wrong_fraction > 0


def test_build_pool_load_only_names_the_missing_teacher_and_trains_nothing(tmp_path):
    from kdrl.pools import build_pool

    spec = POOLS["digits"]
    with pytest.raises(FileNotFoundError, match=r"digits_strong_e3/digits_resnet14_seed0/model\.safetensors"):
        build_pool(spec, None, 3, tmp_path, train_missing=False)  # no loader needed: fails before any training
    assert not any(tmp_path.iterdir())
    with pytest.raises(ValueError, match="needs a cache_dir"):
        build_pool(spec, None, 3, None, train_missing=False)
