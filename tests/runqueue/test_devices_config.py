"""The service's TOML config: every knob checked, relative paths from the file's folder, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from runqueue.config import ConfigError, ServiceConfig, load_service_config
from runqueue.slurm.options import SlurmOptions


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "etc" / "runqueue.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def test_full_config_loads_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    (tmp_path / "etc" / "more").mkdir(parents=True)
    path = write(tmp_path, '''
roots = ["../runs", "more"]
gpus = "0,1"
simulate_gpus = "gpus.json"
cpu_slots = 2
max_per_gpu = 3
memory_per_run = 4000
retries = 0
retry_backoff = 0
kill_grace = "30s"
time_limit = "1h30m"
foreign = "share"
poll_interval = 15
quiet = true
executor = "local"
claims_dir = "/run/lfads-claims"
''')
    config = load_service_config(path)
    etc = tmp_path / "etc"
    assert config == ServiceConfig(
        roots=(etc / "../runs", etc / "more"), gpus="0,1", simulate_gpus=etc / "gpus.json", cpu_slots=2,
        max_per_gpu=3, memory_per_run=4000, retries=0, retry_backoff=0.0, kill_grace=30.0, time_limit=5400.0, foreign="share", poll_interval=15.0,
        quiet=True, executor="local", claims_dir=Path("/run/lfads-claims"))
    assert config.to_argv() == [
        str(etc / "../runs"), str(etc / "more"), "--watch", "--gpus", "0,1", "--simulate-gpus", str(etc / "gpus.json"),
        "--cpu-slots", "2", "--max-per-gpu", "3", "--memory-per-run", "4000", "--retries", "0",
        "--retry-backoff", "0", "--kill-grace", "30", "--time-limit", "5400", "--foreign", "share", "--poll-interval", "15", "--executor", "local", "--quiet"]


@pytest.mark.parametrize(("value", "expected"), [("0", "0"), ("[0, 1]", "0,1"), ('["GPU-a", "GPU-b"]', "GPU-a,GPU-b"),
                                                 ('"0,1"', "0,1"), ('"none"', "none")])
def test_gpus_may_be_written_as_toml_numbers_and_lists(tmp_path: Path, value: str, expected: str) -> None:
    assert load_service_config(write(tmp_path, f'roots = "{tmp_path}"\ngpus = {value}\n')).gpus == expected


def test_minimal_config_takes_the_design_defaults(tmp_path: Path) -> None:
    config = load_service_config(write(tmp_path, f'roots = "{tmp_path}"\n'))
    assert (config.roots, config.max_per_gpu, config.memory_per_run, config.retries, config.foreign) == (
        (tmp_path,), 1, 2000, 1, "block")
    assert config.time_limit is None and config.gpus is None and not config.quiet


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("roots = [\"{root}\"]\ngpu = \"0\"\nmax_per_gpus = 2\n",
         "unknown key(s) 'gpu', 'max_per_gpus' (valid keys: roots, gpus, simulate_gpus, cpu_slots, max_per_gpu,"),
        ("roots = [\"{root}\"]\nmax-per-gpu = 2\n", "use underscores"),
        ("roots = []\n", "roots: must be a non-empty list of folders"),
        ("max_per_gpu = 2\n", "roots: must be a non-empty list"),
        ("roots = [\"{root}/nope\"]\n", "roots: no such folder"),
        ("roots = [\"{root}\"]\nmax_per_gpu = 0\n", "max_per_gpu: must be a whole number >= 1, got 0"),
        ("roots = [\"{root}\"]\nretries = true\n", "retries: must be a whole number >= 0, got True"),
        ("roots = [\"{root}\"]\nmemory_per_run = \"4GB\"\n", "memory_per_run: must be a whole number >= 0"),
        ("roots = [\"{root}/file.txt\"]\n", "file.txt is a file, not a folder (give the runs folder that holds it)"),
        ("roots = [\"{root}\"]\nretry_backoff = -1\n", "retry_backoff: must be 0 or a duration such as \"30s\" or a finite number of seconds, got -1"),
        ("roots = [\"{root}\"]\nkill_grace = \"nan\"\n", "kill_grace: must be 0 or a duration such as \"30s\" or a finite number of seconds, got 'nan'"),
        ("roots = [\"{root}\"]\npoll_interval = \"inf\"\n", "poll_interval: invalid duration 'inf'"),
        ("roots = [\"{root}\"]\npoll_interval = \"400d\"\n", "poll_interval: invalid duration '400d': must be at most 365d"),
        ("roots = [\"{root}\"]\nkill_grace = \"2d\"\n", "kill_grace: invalid duration '2d': must be at most 1d"),
        ("roots = [\"{root}\"]\nretry_backoff = 1e300\n", "retry_backoff: invalid duration 1e+300: must be at most 365d"),
        ("roots = [\"{root}\"]\nforeign = \"allow\"\n", "foreign: must be one of block, share, got 'allow'"),
        ("roots = [\"{root}\"]\ngpus = [0, -1]\n", "gpus: must be GPU indices or UUIDs, e.g. gpus = [0, 1]"),
        ("roots = [\"{root}\"]\ngpus = true\n", "gpus: must be GPU indices or UUIDs"),
        ("roots = [\"{root}\"]\ntime_limit = \"soon\"\n", "time_limit: invalid duration 'soon'"),
        ("roots = [\"{root}\"]\ntime_limit = [1]\n", "time_limit: must be a duration"),
        ("roots = [\"{root}\"]\nquiet = \"yes\"\n", "quiet: must be true or false"),
        ("roots = [\"{root}\"\n", "not valid TOML"),
        ("roots = [\"{root}\"]\n[slurm]\ngpus = 1\n", 'slurm: only applies to SLURM jobs; add executor = "slurm"'),
        ("roots = [\"{root}\"]\nexecutor = \"slurm\"\n[slurm]\ngres = 1\n", "[slurm]: unknown key(s) 'gres'"),
        ("roots = [\"{root}\"]\nexecutor = \"slurm\"\n[slurm]\ngpus = -1\n", "slurm.gpus: must be a whole number >= 0"),
        ("roots = [\"{root}\"]\nexecutor = \"slurm\"\n[slurm]\ntime = \"soon\"\n", "slurm.time: invalid --slurm-time 'soon'"),
        ("roots = [\"{root}\"]\nexecutor = \"slurm\"\n[slurm]\ntime = inf\n", "slurm.time: must be a SLURM time such as"),
        ("roots = [\"{root}\"]\nexecutor = \"slurm\"\ngpus = \"0\"\nforeign = \"share\"\n",
         "gpus, foreign: only apply to this machine's devices, and SLURM picks the devices of its jobs"),
        ("roots = [\"{root}\"]\nexecutor = \"slurm\"\n[slurm]\ntime = nan\n", "slurm.time: must be a SLURM time such as"),
        ("roots = [\"{root}\"]\nexecutor = \"slurm\"\n[slurm]\nextra = [\"--chdir=/tmp\"]\n", "runqueue sets --chdir itself"),
        ("roots = [\"{root}\"]\nexecutor = \"slurm\"\n[slurm]\nextra = 3\n", "slurm.extra: must be a list of sbatch arguments"),
        ("roots = [\"{root}\"]\nexecutor = \"slurm\"\nslurm = 1\n", "slurm: must be a table"),
    ],
)
def test_bad_config_is_one_line_naming_the_file(tmp_path: Path, body: str, expected: str) -> None:
    (tmp_path / "file.txt").write_text("not a folder")
    path = write(tmp_path, body.replace("{root}", str(tmp_path)))
    with pytest.raises(ConfigError) as caught:
        load_service_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert "\n" not in message
    assert isinstance(caught.value, ValueError)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_service_config(tmp_path / "absent.toml")


def test_slurm_table_gives_the_slurm_flags(tmp_path: Path) -> None:
    path = write(tmp_path, f'''
roots = ["{tmp_path}"]
executor = "slurm"
[slurm]
gpus = 2
partition = "gpu"
time = "1-12:00:00"
mem_mb = 32000
cpus = 4
extra = ["--account=lab", "--qos=long term"]
max_submitted = 50
''')
    config = load_service_config(path)
    assert config.slurm == SlurmOptions(gpus=2, partition="gpu", time_s=36 * 3600.0, mem_mb=32000, cpus=4,
                                        extra=("--account=lab", "--qos=long term"), max_submitted=50)
    assert config.to_argv()[-7:] == [
        "--slurm-gpus=2", "--slurm-partition=gpu", "--slurm-time=129600s", "--slurm-mem=32000", "--slurm-cpus=4",
        "--max-submitted=50", "--slurm-extra=--account=lab '--qos=long term'"]
    minutes = load_service_config(write(tmp_path, f'roots = ["{tmp_path}"]\nexecutor = "slurm"\n[slurm]\ntime = 90\n'))
    assert minutes.slurm == SlurmOptions(time_s=5400.0)
    assert load_service_config(write(tmp_path, f'roots = ["{tmp_path}"]\nexecutor = "slurm"\n')).slurm is None


def test_a_folder_given_as_config_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"is a folder, not a config file \(pass the TOML file to --config\)"):
        load_service_config(tmp_path)
