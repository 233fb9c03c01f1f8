#!/bin/bash
# One LFADS run, submitted by `runqueue run --executor slurm` (generated; resubmitting rewrites it).
# The payload is the run's supervisor: it takes the run lock, runs the step scripts, appends
# their output to lfads.out and writes lfads.done / lfads.failed itself. This file (SLURM's
# own output goes to .runqueue/slurm-<jobid>.out) is only the envelope.
#SBATCH --job-name=lfads-param_Qr2PeG/all
#SBATCH --chdir=/data/lfads/runs/exampleRun/param_Qr2PeG/all
#SBATCH --output=/data/lfads/runs/exampleRun/param_Qr2PeG/all/.runqueue/slurm-%j.out
#SBATCH --open-mode=append
#SBATCH --comment=runqueue:0123456789abcdef
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=4
#SBATCH --mem=16000
#SBATCH --time=2:01:00
#SBATCH --partition=gpu
exec /opt/lfads/venv/bin/python -c 'import sys; sys.path.insert(0, "/opt/lfads/src"); from runqueue.slurm.job import main; sys.exit(main())' --token 0123456789abcdef --spec '{"run_dir":"/data/lfads/runs/exampleRun/param_Qr2PeG/all","device_uuid":"slurm","device_name":"assigned by SLURM","device_env":{},"device_index":null,"max_attempts":2,"retry_backoff_s":10.0,"time_limit_s":7200.0,"kill_grace_s":10.0,"queue_id":"login1:4242","device_free_mb":null,"identity":null,"extra_env":{},"claims_dir":null,"batch_token":null}'
