"""The command line: every flag a script of the original MATLAB run manager passes must parse."""

from __future__ import annotations

import pstats
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("absl")  # the model extra; a queue-only install has no flags to parse

from lfads.app_flags import AppFlags
from lfads.flags import KINDS, FlagError, parse_command_line, parse_flags

# The posterior-mean command as LFADS.Run.buildCommandLFADSPosteriorMeanSample writes it: every
# c_* property, doubles with %f, logicals as true/false, debug flags included (run-manager.md §6).
MATLAB_POSTERIOR_COMMAND = """
--data_dir=/abs/run/lfadsInput --data_filename_stem=lfads --lfads_save_dir=/abs/run/lfadsOutput
--kind=posterior_sample_and_average --batch_size=512 --checkpoint_pb_load_name=checkpoint_lve
--allow_gpu_growth=true --max_ckpt_to_keep=5 --max_ckpt_to_keep_lve=5 --device=/gpu:0
--learning_rate_init=0.010000 --learning_rate_decay_factor=0.980000 --learning_rate_n_to_compare=6
--learning_rate_stop=0.000010 --max_grad_norm=200.000000 --cell_clip_value=5.000000
--keep_prob=0.950000 --l2_gen_scale=500.000000 --l2_con_scale=500.000000 --co_mean_corr_scale=0.000000
--kl_ic_weight=1.000000 --kl_co_weight=1.000000 --kl_start_step=0 --l2_start_step=0
--kl_increase_steps=900 --l2_increase_steps=900 --ext_input_dim=0 --inject_ext_input_to_gen=false
--co_dim=4 --prior_ar_atau=10.000000 --do_train_prior_ar_atau=true --prior_ar_nvar=0.100000
--do_train_prior_ar_nvar=true --do_causal_controller=false --do_feed_factors_to_controller=true
--feedback_factors_or_rates=factors --controller_input_lag=1 --ci_enc_dim=128 --con_dim=128
--co_prior_var_scale=0.100000 --num_steps_for_gen_ic=4294967295 --ic_dim=64 --ic_enc_dim=128
--ic_prior_var_min=0.100000 --ic_prior_var_scale=0.100000 --ic_prior_var_max=0.100000
--ic_post_var_min=0.000100 --cell_weight_scale=1.000000 --gen_dim=100
--gen_cell_input_weight_scale=1.000000 --gen_cell_rec_weight_scale=1.000000 --factors_dim=50
--output_dist=poisson --do_train_readin=true --tf_debug_cli=false --tf_debug_tensorboard=false
--tf_debug_tensorboard_hostport=localhost:6064 --debug_verbose=false --debug_print_each_step=false
--in_factors_dim=40
"""


def test_a_matlab_run_manager_command_parses_with_its_values() -> None:
    flags = parse_flags(shlex.split(MATLAB_POSTERIOR_COMMAND))
    assert flags.kind == "posterior_sample_and_average"
    assert flags.batch_size == 512 and flags.checkpoint_pb_load_name == "checkpoint_lve"
    assert flags.learning_rate_stop == pytest.approx(1e-5) and flags.max_grad_norm == 200.0
    assert flags.allow_gpu_growth is True and flags.inject_ext_input_to_gen is False
    assert flags.num_steps_for_gen_ic == 4294967295 and flags.co_dim == 4 and flags.gen_dim == 100
    assert flags.device == "/gpu:0" and flags.tf_debug_tensorboard_hostport == "localhost:6064"
    # the additions keep the original behaviour unless asked for
    assert flags.max_epochs == 0 and flags.seed == -1


def test_defaults_are_the_originals() -> None:
    flags = parse_flags([])
    assert (flags.kind, flags.batch_size, flags.factors_dim, flags.gen_dim, flags.co_dim) == ("train", 128, 50, 200, 1)
    assert (flags.keep_prob, flags.l2_gen_scale, flags.kl_increase_steps) == (0.95, 2000.0, 2000)
    assert flags.checkpoint_name == "lfads_vae" and flags.csv_log == "fitlog"


def test_booleans_take_every_absl_spelling_and_whole_floats_pass_as_ints() -> None:
    flags = parse_flags(["--nodo_train_readin", "--allow_gpu_growth", "--batch_size=512.000000"])
    assert flags.do_train_readin is False and flags.allow_gpu_growth is True and flags.batch_size == 512


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--not_a_flag=1"], "--not_a_flag"),
        (["--kind=sample_everything"], "--kind=sample_everything"),
        (["--batch_size=1.5"], "--batch_size"),
        (["--keep_prob=0"], "--keep_prob"),
        (["positional"], "positional"),
        (["--num_steps_for_gen_ic=0"], "--num_steps_for_gen_ic"),
        (["--prior_ar_nvar=0.000000"], "--prior_ar_nvar=0 must be positive"),
        (["--prior_ar_nvar=-1"], "--prior_ar_nvar=-1 must be positive"),
        (["--prior_ar_atau=0"], "--prior_ar_atau=0 must be positive"),
        (["--prior_ar_atau=-2", "--do_train_prior_ar_atau=false"], "--prior_ar_atau=-2 must be positive"),
        (["--device=gpu0"], "--device=gpu0 is not a TensorFlow device"),
        (["--device=tpu:0"], "--device=tpu:0 is not a TensorFlow device"),
    ],
)
def test_bad_flags_are_one_line_errors_naming_the_flag(argv: list[str], needle: str) -> None:
    with pytest.raises(FlagError) as err:
        parse_flags(argv)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_a_fixed_zero_time_constant_and_an_unused_prior_parse() -> None:
    """atau = 0 kept fixed is white noise (the original took log(0) as -inf); without inferred inputs
    (co_dim = 0) the AR(1) values are never used."""
    assert parse_flags(["--prior_ar_atau=0", "--do_train_prior_ar_atau=false"]).prior_ar_atau == 0.0
    assert parse_flags(["--co_dim=0", "--prior_ar_nvar=0", "--prior_ar_atau=0"]).co_dim == 0


@pytest.mark.parametrize(("device", "kind_and_index"), [
    ("gpu:0", ("gpu", 0)), ("/gpu:1", ("gpu", 1)), ("/device:GPU:2", ("gpu", 2)), ("/cpu:0", ("cpu", 0)),
    ("gpu", ("gpu", 0)), ("/job:localhost/replica:0/task:0/device:GPU:0", ("gpu", 0)),
])
def test_every_device_spelling_tensorflow_took_parses(device: str, kind_and_index: tuple[str, int]) -> None:
    from lfads.flags import device_kind_and_index

    assert parse_flags([f"--device={device}"]).device == device
    assert device_kind_and_index(device) == kind_and_index


def test_cli_rejects_an_unknown_flag_fast_without_tensorflow() -> None:
    code = (
        "import sys\nfrom lfads.cli import main\nrc = main(['--kind=train', '--bogus_flag=3'])\n"
        "assert 'tensorflow' not in sys.modules\nsys.exit(rc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "lfads: error: unknown flag --bogus_flag; see `lfads --help` for the accepted flags"
    )


ABSL_LOGGING_FLAGS = ["--logtostderr", "--alsologtostderr", "--log_dir=/tmp", "-v", "1", "--verbosity=2",
                      "--stderrthreshold=info", "--noshowprefixforinfo", "--logger_levels=tensorflow:INFO"]


def test_absl_app_and_logging_flags_parse_as_under_the_originals_tf_app_run() -> None:
    flags, app = parse_command_line(["--kind=posterior_push_mean", *ABSL_LOGGING_FLAGS])
    assert flags == parse_flags(["--kind=posterior_push_mean"]) and app == AppFlags()
    _, app = parse_command_line(["--pdb", "--profile_file=/tmp/p.prof", "--nouse_cprofile_for_profiling"])
    assert app == AppFlags(pdb_post_mortem=True, profile_file="/tmp/p.prof", use_cprofile_for_profiling=False)
    assert parse_command_line([])[1] == AppFlags()  # nothing carried over from the parse before
    with pytest.raises(FlagError, match="verbosity"):
        parse_command_line(["--verbosity=loud"])


def test_only_check_args_checks_the_flags_and_runs_nothing(tmp_path: Path) -> None:
    code = (
        "import sys\nfrom lfads.cli import main\nrc = main(sys.argv[1:])\n"
        "assert 'tensorflow' not in sys.modules\nsys.exit(rc)\n"
    )
    out = tmp_path / "out"
    argv = ["--kind=train", f"--data_dir={tmp_path / 'missing'}", f"--lfads_save_dir={out}", "--only_check_args"]
    proc = subprocess.run([sys.executable, "-c", code, *argv, *ABSL_LOGGING_FLAGS], capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "") and not out.exists()
    proc = subprocess.run([sys.executable, "-c", code, *argv, "--batch_size=abc"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--batch_size" in proc.stderr


def test_a_profiled_run_leaves_its_profile_even_when_it_fails(tmp_path: Path) -> None:
    profile = tmp_path / "lfads.prof"
    argv = ["--kind=train", f"--data_dir={tmp_path / 'missing'}", f"--lfads_save_dir={tmp_path / 'out'}",
            f"--profile_file={profile}"]
    proc = subprocess.run([sys.executable, "-m", "lfads", *argv], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "data folder not found" in proc.stderr
    stats = pstats.Stats(str(profile))
    assert any(function == "run" and file.endswith("lfads/run.py") for file, _, function in stats.stats)  # type: ignore[attr-defined]


def test_run_with_pdb_stops_in_the_debugger_before_running(tmp_path: Path) -> None:
    argv = ["--kind=train", f"--data_dir={tmp_path / 'missing'}", f"--lfads_save_dir={tmp_path / 'out'}", "--run_with_pdb"]
    proc = subprocess.run([sys.executable, "-m", "lfads", *argv], input="continue\n", capture_output=True, text=True, timeout=120)
    assert "(Pdb)" in proc.stdout
    assert proc.returncode == 1 and "data folder not found" in proc.stderr  # continued into the run


def test_help_lists_every_kind_and_the_added_flags() -> None:
    proc = subprocess.run([sys.executable, "-m", "lfads", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for word in (*KINDS, "--max_epochs", "--seed", "--tf_debug_cli", "--only_check_args", "--logtostderr"):
        assert word in proc.stdout


def test_run_lfads_py_is_on_path_next_to_the_interpreter() -> None:
    # MATLAB-written scripts look for `run_lfads.py` on PATH; it is the same program.
    script = Path(sys.executable).parent / "run_lfads.py"
    proc = subprocess.run([str(script), "--kind=train", "--batch_size=abc"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--batch_size" in proc.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("bounds", [("0.1", "0.5", "0.3"), ("0.2", "0.1", "0.3"), ("0", "0", "0.3")])
def test_an_ic_prior_initial_variance_outside_its_bounds_is_refused(bounds: tuple[str, str, str]) -> None:
    low, init, high = bounds
    with pytest.raises(FlagError, match=r"--ic_prior_var_scale=.* must be positive and within"):
        parse_flags([f"--ic_prior_var_min={low}", f"--ic_prior_var_scale={init}", f"--ic_prior_var_max={high}"])
    # Without an IC prior (--ic_dim=0) the original never looked at them.
    parse_flags(["--ic_dim=0", f"--ic_prior_var_min={low}", f"--ic_prior_var_scale={init}", f"--ic_prior_var_max={high}"])


# Values at the edge of what LFADS takes: prepare refuses exactly those the model refuses, so no run
# is written only to fail at its first step in the queue.
PREPARE_AND_MODEL_AGREE = [
    ({"c_prior_ar_nvar": 0}, False), ({"c_prior_ar_nvar": 0, "c_co_dim": 0}, True),
    ({"c_prior_ar_atau": 0}, False), ({"c_prior_ar_atau": 0, "c_do_train_prior_ar_atau": False}, True),
    ({"c_ic_enc_dim": 0}, False), ({"c_ic_enc_dim": 0, "c_ic_dim": 0}, True),
    ({"c_ci_enc_dim": 0}, False), ({"c_con_dim": 0}, False), ({"c_con_dim": 0, "c_ci_enc_dim": 0, "c_co_dim": 0}, True),
    ({"c_ic_prior_var_scale": 5.0}, False), ({"c_ic_prior_var_scale": 5.0, "c_ic_dim": 0}, True),
    ({"c_device": "cuda:0"}, False), ({"c_device": "/device:GPU:1"}, True), ({"c_device": "/cpu:0"}, True),
    ({"c_device": ""}, True),
    ({"c_debug_verbose": 0.5}, False), ({"c_debug_verbose": 1}, True), ({"c_debug_print_each_step": True}, True),
    ({"c_prior_ar_nvar": 1e-9}, True),
]


@pytest.mark.parametrize(("values", "usable"), PREPARE_AND_MODEL_AGREE)
def test_prepare_refuses_exactly_the_values_lfads_refuses(values: dict[str, object], usable: bool) -> None:
    from manager import RunParams
    from manager.matlab_values import ParamValueError
    from manager.scripts import flag_pairs

    try:
        params = RunParams(**values)
        params.check_consistent()
    except ParamValueError:
        assert not usable, f"prepare refuses {values}, which LFADS takes"
        params = RunParams()
        for name, value in values.items():  # what the script would say, had prepare let it through
            params._values[name] = value
    else:
        assert usable, f"prepare takes {values}, which LFADS refuses"
    argv = [f"--{name}={text}" for name, text in flag_pairs(params, n_datasets=1)]
    if usable:
        parse_flags(argv)
    else:
        with pytest.raises(FlagError):
            parse_flags(argv)
