"""The SLURM executor's parts: one sbatch job per run attempt, whose payload is the run's supervisor.

`options` (what users ask of SLURM), `paths` (the files it adds to `.runqueue/`), `records`
(slurm.json, written by the queue; slurm-job.json, written by the job), `jobscript` (the generated
batch script), `commands` (sbatch/squeue/scancel/scontrol), `watcher` (one batched, backed-off
squeue poller), `outcome` (what to record when a job ended without the supervisor saying so),
`job` (the entry point inside the job), `control` (cancel and status for the CLI).
The executor itself is runqueue/executors/slurm.py.
"""
