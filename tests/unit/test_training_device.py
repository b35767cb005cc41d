"""Where fine-tuning runs: chosen by HEMASCOPE_TRAIN_DEVICE, else CUDA when present, else the CPU."""

from __future__ import annotations

import pytest
import torch

from hemascope.errors import ConfigurationError
from hemascope.training.finetune.network import training_device


def test_default_is_cuda_only_when_pytorch_sees_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HEMASCOPE_TRAIN_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert training_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert training_device() == torch.device("cuda")


def test_the_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("HEMASCOPE_TRAIN_DEVICE", "cpu")
    assert training_device() == torch.device("cpu")


@pytest.mark.parametrize(("value", "message"), [("gpu0", "not a device"), ("cuda", "sees no CUDA device")])
def test_a_wrong_setting_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("HEMASCOPE_TRAIN_DEVICE", value)
    with pytest.raises(ConfigurationError, match=message):
        training_device()
