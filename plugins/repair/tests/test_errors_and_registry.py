"""Registration through the entry point, and one-line errors for bad input."""

import pytest
import torch
from weightlab import plugins, testing
from weightlab.errors import DataError, IncompatibleModelsError, ParamError, UsageError
from weightlab_repair.bias_calibration import BiasCalibration
from weightlab_repair.repair import Repair, Rescale, Reshift
from weightlab_repair.reset_bn import ResetBN

NAMES = {"reset_bn", "repair", "rescale", "reshift", "bias_calibration"}


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and msg
    return msg


@pytest.fixture(scope="module")
def calib():
    return testing.tiny_data("digits").loader("calibration", batch_size=128, num_samples=256)


def test_the_plugin_registers_its_normalizers():
    reg = plugins.registry()
    entries = {e.name: e for e in reg.all("normalizers") if e.plugin == "repair"}
    assert set(entries) == NAMES
    for e in entries.values():
        assert e.cls.summary and e.cls.__doc__ and e.cls.parameters()
    assert not entries["bias_calibration"].cls.needs_data
    assert all(entries[n].cls.needs_data for n in NAMES - {"bias_calibration"})
    repair = reg.create("normalizers", "repair", {"samples": "512", "eps": "1e-6"})
    assert repair.params.samples == 512 and repair.params.eps == 1e-6


def test_bad_parameters_name_the_field():
    with pytest.raises(ParamError, match="repair.samples"):
        Repair.create({"samples": 0})
    with pytest.raises(ParamError, match="bias_calibration.alpha"):
        BiasCalibration.create({"alpha": -0.5})


def test_reset_bn_without_batchnorm_is_an_error(calib):
    net = testing.tiny_model("mlp", input_shape=(1, 8, 8))
    with pytest.raises(UsageError) as err:
        ResetBN().apply(net, [net], [1.0], calib)
    assert "no BatchNorm" in _one_line(err) and "MLP" in str(err.value)


@pytest.mark.parametrize("cls", [ResetBN, Repair, Rescale, Reshift])
def test_data_driven_normalizers_need_data(cls):
    net = testing.tiny_model("cifar_resnet8", input_shape=(1, 8, 8))
    with pytest.raises(UsageError) as err:
        cls().apply(net, [net], [1.0], None)
    assert _one_line(err).startswith(f"{cls.name}: needs calibration data")


def test_bias_free_layer_needs_rescale(calib):
    """REPAIR/RESHIFT need a bias for the mean shift; RESCALE works without one."""
    net = testing.tiny_model("mlp", input_shape=(1, 8, 8), bias=False)
    for cls in (Repair, Reshift):
        with pytest.raises(UsageError) as err:
            cls().apply(net, [net], [1.0], calib)
        msg = _one_line(err)
        assert "'layers.1'" in msg and "rescale" in msg
    out = Rescale().apply(net, [net], [1.0], calib)
    assert set(out.state_dict()) == set(net.state_dict())


def test_reference_weights_and_architectures_are_checked(calib):
    net = testing.tiny_model("mlp", input_shape=(1, 8, 8), width=64)
    other = testing.tiny_model("mlp", input_shape=(1, 8, 8), width=32)
    with pytest.raises(UsageError) as err:
        Repair().apply(net, [net, net], [1.0], calib)
    assert "2 reference models" in _one_line(err)
    with pytest.raises(UsageError) as err:
        Repair().apply(net, [net, net], [0.7, 0.7], calib)
    assert "sum to 1" in _one_line(err)
    with pytest.raises(IncompatibleModelsError) as err:
        Repair().apply(net, [other], [1.0], calib)
    assert "'layers.1'" in _one_line(err) and "reference model 1" in str(err.value)


def test_empty_calibration_data_is_an_error():
    net = testing.tiny_model("mlp", input_shape=(1, 8, 8))
    empty = [(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long))]
    with pytest.raises(DataError) as err:
        Repair().apply(net, [net], [1.0], empty)
    assert "calibration data is empty" in _one_line(err)
