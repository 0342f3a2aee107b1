"""Farm config: the packaged default, and errors that point at the field and the line."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qrt_ray.calibration import load_backend
from qrt_ray.config import (
    DeviceConfig,
    FarmConfig,
    load_farm_config,
    load_farm_config_text,
    load_policy_config,
)
from qrt_ray.errors import ConfigError, ValidationError

REPO_ROOT = Path(__file__).resolve().parents[2]

# Line numbers below are 1-based lines of this text.
TWO_DEVICES = """\
name: test-farm
devices:
  - name: small
    backend: FakeManilaV2
    price_per_shot_usd: 0.00001
    price_per_job_usd: 0.01
  - name: big
    backend: FakeKolkataV2
    price_per_shot_usd: {big_price}
    price_per_job_usd: 0.1
"""


def _error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_farm_config_text(text, source="farm-under-test.yaml")
    return str(info.value)


def test_default_farm_has_devices_of_distinct_sizes() -> None:
    farm = load_farm_config()

    sizes = {d.name: load_backend(d.backend).num_qubits for d in farm.devices}
    assert len(farm.devices) >= 6
    assert len(set(sizes.values())) >= 6
    assert min(sizes.values()) <= 7 and max(sizes.values()) >= 127


def test_default_farm_charges_more_for_bigger_devices() -> None:
    farm = load_farm_config()
    by_size = sorted(farm.devices, key=lambda d: load_backend(d.backend).num_qubits)

    shot_prices = [d.price_per_shot_usd for d in by_size]
    job_prices = [d.price_per_job_usd for d in by_size]
    assert shot_prices == sorted(shot_prices)
    assert job_prices == sorted(job_prices)
    assert shot_prices[-1] > shot_prices[0]


@pytest.mark.parametrize("name", ["farm.yaml", "policies.yaml"])
def test_the_configs_users_read_are_the_packaged_ones(name: str) -> None:
    # one copy: configs/ is a link to the package's configs, not a second file to edit
    example = REPO_ROOT / "configs" / name
    packaged = importlib.resources.files("qrt_ray") / "configs" / name
    assert (REPO_ROOT / "configs").is_symlink()
    assert example.resolve() == Path(str(packaged)).resolve()
    assert (REPO_ROOT / "examples" / "ghz.qasm").resolve() == (
        REPO_ROOT / "qrt_ray" / "examples" / "ghz.qasm"
    ).resolve()


def test_policy_config_loads_and_bad_values_name_field_and_line(tmp_path: Path) -> None:
    cfg = load_policy_config()
    assert cfg.policy == "composite" and cfg.weights.fidelity == 1.0
    path = tmp_path / "policies.yaml"
    path.write_text("policy: fastest\nweights:\n  fidelity: 1\n  time: -2\n  cost: 0\n")
    with pytest.raises(ConfigError) as err:
        load_policy_config(path)
    text = str(err.value)
    assert "policy" in text and "fastest" in text
    assert "weights.time" in text and "line 4" in text


def test_loading_a_file_equals_loading_its_text(tmp_path: Path) -> None:
    path = tmp_path / "farm.yaml"
    path.write_text(TWO_DEVICES.format(big_price=0.00006), encoding="utf-8")

    farm = load_farm_config(path)

    assert farm == load_farm_config_text(path.read_text(encoding="utf-8"))
    assert farm.device_names == ("small", "big")
    assert farm.device("big").price_per_shot_usd == pytest.approx(0.00006)


def test_defaults_are_applied() -> None:
    device = load_farm_config_text(TWO_DEVICES.format(big_price=0.1)).device("small")

    assert (device.queue_limit, device.gpu, device.max_batch_circuits) == (1000, "auto", 1000)
    assert device.description is None


def test_unknown_backend_names_field_line_and_suggests_names() -> None:
    text = TWO_DEVICES.format(big_price=0.1).replace("FakeKolkataV2", "FakeKolkata")

    message = _error_of(text)

    assert "farm-under-test.yaml" in message
    assert "devices[1].backend (line 8)" in message
    assert "'FakeKolkata'" in message
    assert "FakeKolkataV2" in message  # the close match is suggested


def test_negative_price_names_field_line_and_value() -> None:
    message = _error_of(TWO_DEVICES.format(big_price=-0.5))

    assert "devices[1].price_per_shot_usd (line 9)" in message
    assert "-0.5" in message
    assert "greater than or equal to 0" in message


def test_duplicate_device_names_point_at_the_duplicate() -> None:
    text = TWO_DEVICES.format(big_price=0.1).replace("name: big", "name: small")

    message = _error_of(text)

    assert "devices[1].name (line 7)" in message
    assert "duplicate device name 'small'" in message
    assert "devices[0]" in message


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "farm.yaml"

    with pytest.raises(ConfigError, match="no such file") as info:
        load_farm_config(missing)
    assert str(missing) in str(info.value)


def test_errors_in_a_file_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad-farm.yaml"
    path.write_text(TWO_DEVICES.format(big_price="lots"), encoding="utf-8")

    with pytest.raises(ConfigError) as info:
        load_farm_config(str(path))
    assert str(path) in str(info.value)
    assert "devices[1].price_per_shot_usd (line 9)" in str(info.value)
    assert "'lots'" in str(info.value)


def test_every_error_is_reported_at_once() -> None:
    text = (
        TWO_DEVICES.format(big_price=0.1)
        .replace("name: small", "name: Small!")
        .replace("price_per_job_usd: 0.1", "price_per_job_usd: 0.1\n    colour: red")
    )

    message = _error_of(text)

    assert "(2 errors)" in message
    assert "devices[0].name (line 3)" in message
    assert "devices[1].colour (line 11)" in message
    assert "Extra inputs are not permitted" in message


def test_missing_field_points_at_its_device() -> None:
    text = TWO_DEVICES.format(big_price=0.1).replace("    price_per_job_usd: 0.01\n", "")

    message = _error_of(text)

    assert "devices[0].price_per_job_usd (line 3): required field is missing" in message


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("backend: FakeManilaV2", "backend: FakeManilaV2\n    gpu: always", "devices[0].gpu"),
        ("backend: FakeManilaV2", "backend: FakeManilaV2\n    queue_limit: 0", "queue_limit"),
        ("price_per_job_usd: 0.01", "price_per_job_usd: .inf", "finite number"),
        ("devices:\n", "devices: []\nother:\n", "devices (line 2)"),
    ],
)
def test_invalid_values_are_rejected(old: str, new: str, expected: str) -> None:
    text = TWO_DEVICES.format(big_price=0.1).replace(old, new, 1)

    assert expected in _error_of(text)


def test_yaml_syntax_error_names_the_line() -> None:
    text = TWO_DEVICES.format(big_price="0.1: 2")

    message = _error_of(text)

    assert "farm-under-test.yaml line 9: not valid YAML" in message
    assert "mapping values are not allowed" in message


def test_a_key_given_twice_is_an_error_not_a_silent_override() -> None:
    text = TWO_DEVICES.format(big_price=0.1).replace(
        "    price_per_job_usd: 0.01\n", "    price_per_job_usd: 0.01\n    price_per_job_usd: 9\n"
    )

    message = _error_of(text)

    assert "devices[0].price_per_job_usd (line 7)" in message
    assert "first on line 6" in message


def test_empty_file_is_an_error() -> None:
    assert "empty" in _error_of("# nothing here\n")


def test_device_lookup_names_known_devices() -> None:
    farm = load_farm_config_text(TWO_DEVICES.format(big_price=0.1))

    with pytest.raises(ValidationError, match="known devices: small, big"):
        farm.device("huge")


def test_models_are_frozen() -> None:
    farm = load_farm_config_text(TWO_DEVICES.format(big_price=0.1))

    with pytest.raises(Exception, match="frozen"):
        farm.devices[0].price_per_shot_usd = 0.0  # type: ignore[misc]
    assert isinstance(farm, FarmConfig) and isinstance(farm.devices[0], DeviceConfig)


@settings(max_examples=40, deadline=None)
@given(price=st.floats(allow_nan=False, allow_infinity=False))
def test_any_finite_price_is_accepted_iff_not_negative(price: float) -> None:
    text = TWO_DEVICES.format(big_price=repr(price))

    if price >= 0:
        assert load_farm_config_text(text).device("big").price_per_shot_usd == price
    else:
        assert "devices[1].price_per_shot_usd (line 9)" in _error_of(text)


def test_drift_is_optional_per_device_and_checked() -> None:
    text = TWO_DEVICES.format(big_price=0.0001)
    farm = load_farm_config_text(text)
    assert all(d.drift is None for d in farm.devices)
    drifting = text + "    drift: {seed: 7, time_scale: 3600}\n"
    big = load_farm_config_text(drifting).device("big")
    assert big.drift is not None and big.drift.seed == 7 and big.drift.time_scale == 3600
    message = _error_of(text + "    drift: {time_scale: 0, tls_rate: 1}\n")
    assert "devices[1].drift.time_scale" in message and "greater than 0" in message
    assert "devices[1].drift.tls_rate" in message


def test_a_file_that_is_no_yaml_mapping_is_refused_without_its_text(tmp_path: Path) -> None:
    from qrt_ray.slo import load_slo_config

    secret = tmp_path / "notes.txt"
    secret.write_text("root:x:0:0:hunter2-secret-line\nsecond line\n")
    for load in (load_farm_config, load_slo_config):
        with pytest.raises(ValidationError) as info:
            load(secret)
        message = str(info.value)
        assert "must hold a YAML mapping, not a str" in message
        assert "hunter2" not in message and "root:x" not in message


def test_no_device_may_be_named_ideal() -> None:
    from qrt_ray.config import load_farm_config_text

    text = (
        "name: f\ndevices:\n  - {name: ideal, backend: FakeManilaV2, "
        "price_per_shot_usd: 0, price_per_job_usd: 0}\n"
    )
    with pytest.raises(Exception, match="'ideal' is reserved"):
        load_farm_config_text(text)
