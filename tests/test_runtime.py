"""utils/runtime.py: the evaluation mode that validations inside training rely on."""
import pytest
import torch

from utils.runtime import evaluation_mode


def test_evaluation_mode_switches_dropout_off_and_restores_the_mode_it_found_even_after_an_error():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5))
    inputs = torch.ones(8, 4)
    with evaluation_mode(model):
        assert not model.training and not model[1].training
        assert torch.equal(model(inputs), model(inputs))  # dropout off: deterministic
    assert model.training and model[1].training
    with pytest.raises(RuntimeError, match="in the block"):
        with evaluation_mode(model):
            raise RuntimeError("in the block")
    assert model.training
    model.eval()
    with evaluation_mode(model):
        pass
    assert not model.training  # a model found in eval mode stays there
