"""Bad inputs fail early with clear errors."""

import pytest
import torch
from torch import nn

from kdrl import (
    MTKDRL,
    DistillConfig,
    MultiTeacherDistiller,
    TeacherPool,
    as_feature_classifier,
    create_model,
    create_strategy,
)


def test_unknown_names():
    with pytest.raises(ValueError, match="unknown strategy"):
        create_strategy("best")
    with pytest.raises(ValueError, match="unknown model"):
        create_model("resnet1000")


def test_config_validation():
    with pytest.raises(ValueError, match="epochs"):
        DistillConfig(epochs=0)
    with pytest.raises(ValueError, match="temperature"):
        DistillConfig(temperature=-1.0)
    with pytest.raises(ValueError, match="depth"):
        create_model("resnet8", depth=9)
    with pytest.raises(ValueError, match="agent_step"):
        MTKDRL(agent_step=0)


def test_teacher_pool_validation():
    with pytest.raises(ValueError, match="at least one"):
        TeacherPool([])
    with pytest.raises(TypeError, match="list"):
        TeacherPool(create_model("digits_mlp"))
    with pytest.raises(ValueError, match="feature_layer"):
        TeacherPool([create_model("digits_mlp")], feature_layers=["nope"])
    with pytest.raises(ValueError, match="cannot find features"):
        as_feature_classifier(nn.Linear(4, 2))
    pool = TeacherPool([create_model("digits_mlp"), create_model("digits_mlp", num_classes=5)])
    with pytest.raises(ValueError, match="same number of classes"):
        pool.infer_shapes(torch.randn(2, 1, 8, 8))


def test_student_teacher_class_mismatch_is_reported_before_training():
    d = MultiTeacherDistiller(create_model("digits_convnet_tiny", num_classes=5), [create_model("digits_mlp")],
                              "aver", DistillConfig(epochs=1))
    with pytest.raises(ValueError, match="classes"):
        d.setup(torch.randn(4, 1, 8, 8))
    with pytest.raises(TypeError, match="DataLoader"):
        d.fit([(torch.randn(4, 1, 8, 8), torch.zeros(4, dtype=torch.long))])
    with pytest.raises(TypeError, match="config"):
        MultiTeacherDistiller("digits_convnet_tiny", ["digits_mlp"], "aver", config={"epochs": 1})


def test_cifar100_without_data_says_what_to_do(tmp_path):
    from kdrl.data import cifar100_loaders

    with pytest.raises(FileNotFoundError, match="cifar-100-python.*--download"):
        cifar100_loaders(tmp_path)


def test_digits_loader_arguments():
    from kdrl.data import digits_loaders

    with pytest.raises(ValueError, match="batch_size"):
        digits_loaders(0)
    with pytest.raises(ValueError, match="train_fraction"):
        digits_loaders(8, train_fraction=0.0)
    train, _ = digits_loaders(8, train_fraction=0.25)
    assert 300 < len(train.dataset) < 420
