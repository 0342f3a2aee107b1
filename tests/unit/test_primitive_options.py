"""Primitive options: validated on set, named in errors, levels mapped to techniques."""

from __future__ import annotations

import pytest

from qrt_ray.errors import ValidationError
from qrt_ray.primitives.estimator import _settings, shots_for
from qrt_ray.primitives.options import EstimatorOptions, SamplerOptions
from qrt_ray.primitives.runner import twirl_spec


def test_defaults_follow_the_hardware_runtime() -> None:
    est = EstimatorOptions()
    assert est.default_precision == 0.015625 and est.resilience_level == 1
    assert shots_for(est.default_precision) == 4096
    assert SamplerOptions().default_shots == 4096


def test_bad_values_are_refused_and_leave_the_old_value() -> None:
    opts = EstimatorOptions()
    with pytest.raises(ValidationError, match=r"resilience_level=5"):
        opts.resilience_level = 5
    assert opts.resilience_level == 1
    with pytest.raises(ValidationError, match="noise_factors must be 2 or more"):
        opts.resilience.zne.noise_factors = (1.0,)
    assert opts.resilience.zne.noise_factors == (1.0, 3.0, 5.0)
    with pytest.raises(ValidationError, match="no option 'resilence_level'"):
        opts.resilence_level = 2  # type: ignore[attr-defined]
    with pytest.raises(ValidationError, match="extrapolator"):
        opts.resilience.zne.extrapolator = "cubic"
    with pytest.raises(ValidationError, match="pec_mitigation"):
        opts.resilience.pec_mitigation = True  # type: ignore[assignment]
    with pytest.raises(ValidationError, match="default_shots"):
        SamplerOptions(default_shots=0)


def test_update_reaches_sub_options_by_dotted_key_or_dict() -> None:
    opts = EstimatorOptions()
    opts.update(**{"resilience.zne_mitigation": True, "twirling": {"enable_gates": True}})
    opts.update(resilience_level=0, default_precision=0.01)
    assert opts.resilience.zne_mitigation is True and opts.twirling.enable_gates is True
    assert opts.resilience_level == 0 and shots_for(opts.default_precision) == 10_000


@pytest.mark.parametrize(
    ("level", "measure", "zne", "gate_twirl"),
    [(0, False, False, False), (1, True, False, False), (2, True, True, True)],
)
def test_levels_set_the_techniques(level: int, measure: bool, zne: bool, gate_twirl: bool) -> None:
    s = _settings(EstimatorOptions(resilience_level=level))
    assert (s["measure_mitigation"], s["zne"], s["gate_twirl"]) == (measure, zne, gate_twirl)
    assert s["measure_twirl"] is (level >= 1)
    assert s["factors"] == ((1.0, 3.0, 5.0) if zne else (1.0,))


def test_explicit_switches_override_the_level() -> None:
    opts = EstimatorOptions(resilience_level=2)
    opts.resilience.zne_mitigation = False
    opts.resilience.measure_mitigation = False
    s = _settings(opts)
    assert not s["zne"] and not s["measure_mitigation"] and s["gate_twirl"]


def test_twirl_randomizations() -> None:
    opts = EstimatorOptions().twirling
    assert twirl_spec(opts, 4096, gates=False, measure=False) is None
    assert twirl_spec(opts, 4096, gates=True, measure=True).randomizations == 32
    assert twirl_spec(opts, 300, gates=False, measure=True).randomizations == 2
    opts.shots_per_randomization = 100
    assert twirl_spec(opts, 1000, gates=True, measure=False).randomizations == 10
    opts.num_randomizations = 3
    assert twirl_spec(opts, 1000, gates=True, measure=False).randomizations == 3


def test_extrapolators_need_enough_noise_factors() -> None:
    zne = EstimatorOptions().resilience.zne
    zne.update(noise_factors=(1.0, 2.0), extrapolator=("polynomial_degree_2", "linear"))
    with pytest.raises(ValidationError, match="needs more noise factors"):
        zne.extrapolator = "polynomial_degree_2"
    assert zne.extrapolator == ("polynomial_degree_2", "linear")


def test_decoupling_sequences_the_devices_can_play() -> None:
    from qrt_ray.primitives.runner import dd_spec

    opts = EstimatorOptions().dynamical_decoupling
    assert dd_spec(opts) is None
    opts.enable = True
    assert dd_spec(opts).sequence == "XX"
    opts.sequence_type = "XY4"
    with pytest.raises(ValidationError, match=r"sequence_type='XY4'.*use 'XX'"):
        dd_spec(opts)


def test_hardware_runtime_settings_are_accepted_or_refused_clearly() -> None:
    opts = SamplerOptions()
    opts.execution.rep_delay = 0.00025
    opts.simulator.seed_simulator = 42
    opts.environment.job_tags = ["exp-1"]
    # read back as set (their effect on farm jobs: tests/integration/test_primitives.py)
    assert opts.execution.rep_delay == 0.00025
    assert opts.simulator.seed_simulator == 42 and opts.environment.job_tags == ["exp-1"]
    with pytest.raises(ValidationError, match="rep_delay"):
        opts.execution.rep_delay = -1.0
    assert opts.execution.rep_delay == 0.00025  # a refused value leaves the old one
    with pytest.raises(ValidationError, match="noise_model"):
        opts.simulator.noise_model = object()
    assert opts.simulator.noise_model is None


def test_twirling_can_be_switched_off_at_any_level() -> None:
    opts = EstimatorOptions(resilience_level=2)
    opts.twirling.enable_measure = False
    opts.twirling.enable_gates = False
    s = _settings(opts)
    assert not s["measure_twirl"] and not s["gate_twirl"] and s["zne"]
    assert twirl_spec(opts.twirling, 1, gates=False, measure=True) is None  # one shot


def test_readout_truncation_is_a_sampler_setting() -> None:
    opts = EstimatorOptions()
    opts.resilience.readout_distance = 3
    with pytest.raises(ValidationError, match=r"readout_distance=3 applies to the Sampler"):
        _settings(opts)
    sampler = SamplerOptions()
    sampler.resilience.readout_distance = 3  # the sampler's quasi-distributions use it
    assert sampler.resilience.readout_distance == 3


def test_options_are_dataclasses_with_the_hardware_runtime_nesting() -> None:
    import dataclasses

    opts = EstimatorOptions(resilience={"zne": {"noise_factors": [1, 2, 3]}}, seed_simulator=3)
    tree = dataclasses.asdict(opts)
    assert tree["resilience"]["zne"]["noise_factors"] == (1.0, 2.0, 3.0)
    assert tree["seed_simulator"] == 3 and tree["abelian_grouping"] is True
    assert set(tree) >= {"default_precision", "resilience_level", "twirling", "simulator"}
    with pytest.raises(ValidationError, match=r"execution.init_qubits=2: Input should be"):
        EstimatorOptions(execution={"init_qubits": 2})
    copied = dataclasses.replace(opts)
    assert copied == opts


def test_backend_primitive_option_names_are_taken() -> None:
    est = EstimatorOptions(seed_simulator=12)
    est.abelian_grouping = False
    assert est.run_seed() == 12
    est.seed_estimator = 4  # the estimator's own seed wins
    assert est.run_seed() == 4
    sampler = SamplerOptions(run_options={"seed_simulator": 9, "memory": True})
    assert sampler.run_seed() == 9
    with pytest.raises(ValidationError, match=r"meas_level=1: the devices return classified"):
        SamplerOptions(run_options={"meas_level": 1, "meas_return": "avg"})
    with pytest.raises(ValidationError, match=r"run_options \['init_qubit'\]: not options"):
        sampler.run_options = {"init_qubit": False}
    assert sampler.run_options == {"seed_simulator": 9, "memory": True}  # left as it was
