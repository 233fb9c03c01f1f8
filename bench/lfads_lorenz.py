"""LFADS on the Lorenz demo: fit quality, wall time, training speed, posterior-sampling speed-up.

    .venv/bin/python bench/lfads_lorenz.py [--profile quick|full] [--workdir DIR] [--skip-train] [--device gpu:0]

Builds the demo run tree with `lfads-manager`'s own code, runs the run's generated
`lfads_train.sh` and `lfads_posterior_mean_sample.sh` as the queue would (real subprocesses),
then reports:
  * valid-trial rate R² against the true rates. The truth is the expected spike count per bin,
    recomputed from the generator's W, b and Lorenz trajectories stored in datasetNNN.mat (spikes
    are Bernoulli per 1 ms, so the expected count is Σ(1 − e^−rate)); R² is sklearn's
    uniform average over neurons of time-concatenated trials. The R² against the h5
    `valid_truth` the manager exported (the same expected counts, stored as float32) is printed
    next to it, as a check that the export and `lfads-manager report` agree with the bench.
  * valid NLL: mean `nll_bound_vaes` (nats per trial) from the posterior file;
  * wall time of each step, training steps/s, and the load average (other jobs share the cores);
  * in-process: steady-state training step time with and without XLA (ratio), and the
    posterior-sampling speed-up of the vectorised path over the original's one-call-per-trial
    method, on the same trials and samples (they must agree to float precision).
Timings are ratios against baselines measured in the same run; nothing here asserts.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
# Run as a script, bench/ would be sys.path[0] and its modules could shadow the standard library.
sys.path[0] = str(REPO)

from manager.demo import build_demo  # noqa: E402
from manager.demo_profiles import QUICK_PROFILE  # noqa: E402

# "full": the same data, a larger model trained to the learning-rate stop (no epoch cap).
FULL_OVERRIDES: dict[str, Any] = {
    "c_gen_dim": 100, "c_ic_enc_dim": 100, "c_ic_dim": 64, "c_batch_size": 50,
    "c_kl_increase_steps": 1000, "c_l2_increase_steps": 1000, "c_max_epochs": 300,
    "c_learning_rate_stop": 1e-4, "num_samples_posterior": 128,
}


def profile_dict(name: str) -> dict[str, Any]:
    profile = {**QUICK_PROFILE, "params": dict(QUICK_PROFILE["params"])}
    if name == "full":
        profile["params"].update(FULL_OVERRIDES)
        profile["collection"] = "lorenzFull"
    return profile


def run_script(script: Path) -> float:
    start = time.monotonic()
    with (script.parent / f"{script.stem}.bench.log").open("w") as log:
        proc = subprocess.run(["bash", str(script)], cwd=script.parent, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise SystemExit(f"{script} failed with exit status {proc.returncode}; see {log.name}")
    return time.monotonic() - start


def expected_counts(mat_path: Path, bin_ms: int, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(per-trial expected counts (E, T, D) at bin_ms, h5-free) from the generator's parameters."""
    from scipy.io import loadmat

    mat = loadmat(mat_path)
    weights, bias = mat["W"], mat["b"].ravel()
    traj = mat["lorenz_trajectories"]  # 3 x nTime(1 ms) x nConditions
    log_rates = np.einsum("nk,ktc->cnt", weights, traj) + bias[None, :, None]
    p_spike = -np.expm1(-np.exp(np.clip(log_rates, -20.0, 20.0)))  # per 1 ms bin
    per_bin = p_spike[:, :, : steps * bin_ms].reshape(p_spike.shape[0], p_spike.shape[1], steps, bin_ms).sum(axis=3)
    condition = mat["conditionId"].ravel().astype(int) - 1
    return np.transpose(per_bin, (0, 2, 1))[condition], condition


def r2_uniform(pred: np.ndarray, truth: np.ndarray) -> float:
    """sklearn r2_score(truth, pred) with trials concatenated in time, averaged over neurons."""
    p, t = pred.reshape(-1, pred.shape[-1]), truth.reshape(-1, truth.shape[-1])
    ss_res = ((t - p) ** 2).sum(axis=0)
    ss_tot = ((t - t.mean(axis=0)) ** 2).sum(axis=0)
    keep = ss_tot > 0
    return float(np.mean(1.0 - ss_res[keep] / ss_tot[keep]))


def script_flags(script: Path) -> list[str]:
    """The --flag=value tokens of a generated step script; its paths are relative to the run folder
    (the script cds there), so use them from there."""
    text = script.read_text().replace("\\\n", " ")
    command = next(line for line in text.splitlines() if "-m lfads" in line)
    return [token for token in shlex.split(command) if token.startswith("--")]


def in_process_timings(run_dir: Path, trials: int, samples: int, device: str) -> dict[str, Any]:
    import tensorflow as tf

    from lfads.flags import parse_flags
    from lfads.posterior import Sampler, SplitKey, average_per_trial, average_split
    from lfads.run import prepare
    from lfads.steps import CompiledSteps
    from lfads.train import epoch_batches

    tf.get_logger().setLevel("ERROR")
    post = parse_flags([*script_flags(run_dir / "lfads_posterior_mean_sample.sh"),
                        f"--batch_size={samples}", f"--device={device}"])
    ctx = prepare(post)
    ds = ctx.datasets[0]
    assert ds.valid_data is not None
    data = ds.valid_data[:trials]
    sampler = Sampler(ctx)
    results: dict[str, Any] = {}
    with tf.device(ctx.device):
        key = SplitKey(0, 1)
        average_split(sampler, key, data, None, samples, 11)  # compile outside the timing
        average_per_trial(sampler, key, data[:1], None, samples, 11)
        start = time.perf_counter()
        fast = average_split(sampler, key, data, None, samples, 11)
        results["posterior_vectorised_s"] = time.perf_counter() - start
        start = time.perf_counter()
        slow = average_per_trial(sampler, key, data, None, samples, 11)
        results["posterior_per_trial_s"] = time.perf_counter() - start
        results["posterior_max_abs_diff_rates"] = float(np.max(np.abs(fast["output_dist_params"]
                                                                      - slow["output_dist_params"])))
    results["device"] = ctx.device
    train_flags = parse_flags([*script_flags(run_dir / "lfads_train.sh"), f"--device={device}",
                               f"--lfads_save_dir={run_dir / 'bench_scratch'}"])
    rng = np.random.default_rng(0)
    runners = {}
    for jit in (False, True):
        ctx = prepare(train_flags)
        steps = CompiledSteps(ctx.built, ctx.costs, train_flags.keep_prob, jit)
        runners["xla" if jit else "plain"] = (ctx, steps.train(0))
    batches = epoch_batches(ctx.datasets, "train", train_flags.batch_size, rng)
    elapsed = {name: 0.0 for name in runners}
    count = {name: 0 for name in runners}
    with tf.device(ctx.device):
        for round_index in range(4):  # interleaved rounds, so load from other jobs hits both alike
            for name, (run_ctx, step_fn) in runners.items():
                start = time.perf_counter()
                for index, rows in batches:
                    result = step_fn(run_ctx.datasets[index].train_data[rows], None, rng.integers(0, 2**62, 2))
                float(result.costs.total)
                if round_index > 0:  # round 0 compiles and warms up
                    elapsed[name] += time.perf_counter() - start
                    count[name] += len(batches)
    for name in runners:
        results[f"train_step_ms_{name}"] = 1000 * elapsed[name] / count[name]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=("quick", "full"), default="quick")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lfads_lorenz_bench"))
    parser.add_argument("--skip-train", action="store_true", help="reuse a trained run in --workdir")
    parser.add_argument("--posterior-trials", type=int, default=64)
    parser.add_argument("--device", default="cpu:0",
                        help="device of the in-process timings, as lfads --device (gpu:0 falls back to the CPU "
                             "when TensorFlow sees no GPU); the run scripts keep their own --device")
    args = parser.parse_args()

    profile = profile_dict(args.profile)
    collection = build_demo(args.workdir, profile)
    run_dir = collection.find_runs(spec="single_dataset001")[0].path
    load_before = os.getloadavg()
    walls = {}
    if not args.skip_train:
        for marker in ("lfadsOutput",):
            subprocess.run(["rm", "-rf", str(run_dir / marker)], check=True)
        walls["train_s"] = run_script(run_dir / "lfads_train.sh")
        walls["posterior_s"] = run_script(run_dir / "lfads_posterior_mean_sample.sh")
    load_after = os.getloadavg()

    out = run_dir / "lfadsOutput"
    with h5py.File(next((run_dir / "lfadsInput").glob("lfads_*.h5"))) as h5:
        valid_inds = h5["valid_inds"][()].astype(int) - 1
        h5_truth = h5["valid_truth"][()]
        steps, bin_ms = h5["valid_data"].shape[1], int(profile["params"]["spikeBinMs"])
    with h5py.File(out / "model_runs_dataset001.h5_valid_posterior_sample_and_average") as h5:
        rates = h5["output_dist_params"][()]
        nll = float(np.mean(h5["nll_bound_vaes"][()]))
        lve_step = int(h5["train_steps"][0])
    truth_all, _ = expected_counts(args.workdir / "datasets" / "dataset001.mat", bin_ms, steps)
    truth = truth_all[valid_inds]
    fitlog_lines = (out / "fitlog.csv").read_text().splitlines()
    global_step = int(fitlog_lines[-1].split(",")[3])  # "epoch,E, step,S, ..."

    print(f"profile {args.profile}: run {run_dir}")
    print(f"  valid trials {rates.shape[0]}, T={rates.shape[1]}, neurons={rates.shape[2]}, "
          f"epochs {len(fitlog_lines)}, global steps {global_step} (posterior from the LVE checkpoint, step {lve_step})")
    print(f"  valid rate R2 vs expected counts (exact truth): {r2_uniform(rates, truth):.3f}")
    print(f"  valid rate R2 vs h5 valid_truth (manager export): {r2_uniform(rates, h5_truth):.3f}")
    print(f"  valid NLL bound (VAE, nats/trial): {nll:.2f}")
    if walls:
        print(f"  wall: train {walls['train_s']:.1f} s, posterior {walls['posterior_s']:.1f} s; "
              f"training {global_step / walls['train_s']:.1f} steps/s (incl. start-up, compile, validation)")
    print(f"  load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} ({os.cpu_count()} cores, shared with other jobs)")
    with contextlib.chdir(run_dir):  # the step scripts' flags hold paths relative to the run folder
        timings = in_process_timings(run_dir, args.posterior_trials, int(profile["params"]["num_samples_posterior"]),
                                     args.device)
    print(f"  in-process timings on {timings['device']}")
    ratio = timings["posterior_per_trial_s"] / timings["posterior_vectorised_s"]
    print(f"  posterior sampling, {args.posterior_trials} trials x {profile['params']['num_samples_posterior']} samples: "
          f"per-trial reference {timings['posterior_per_trial_s']:.2f} s, vectorised "
          f"{timings['posterior_vectorised_s']:.2f} s -> speed-up {ratio:.1f}x "
          f"(max |rate diff| {timings['posterior_max_abs_diff_rates']:.2e})")
    plain, xla = timings["train_step_ms_plain"], timings["train_step_ms_xla"]
    print(f"  training step: plain {plain:.1f} ms, XLA {xla:.1f} ms -> XLA speed-up {plain / xla:.2f}x")


if __name__ == "__main__":
    main()
