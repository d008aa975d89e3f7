#!/bin/bash
# Download a file list with a Slurm job array, one task per shard (spate --shard K/N).
# Slurm numbers the tasks 0..N-1 in $SLURM_ARRAY_TASK_ID and sets $SLURM_ARRAY_TASK_COUNT;
# spate picks the manifest entries whose destination hashes to the task's number, so the
# shards are disjoint and together are the whole list. Resubmitting a failed task
# (sbatch --array=K slurm-array.sh) skips its complete files and resumes partial ones.
#
#   sbatch slurm-array.sh                       # N = 4 tasks, as --array below says
#   SPATE_MANIFEST=files.txt SPATE_DIR=/scratch/out sbatch --array=0-15 slurm-array.sh
#
#SBATCH --job-name=spate-shards
#SBATCH --array=0-3
#SBATCH --cpus-per-task=2
#SBATCH --output=spate-%A_%a.log
set -euo pipefail
manifest=${SPATE_MANIFEST:-files.txt}
dir=${SPATE_DIR:-out}
exec "${SPATE:-spate}" -i "$manifest" -d "$dir" --shard "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT" --max-per-host 8
