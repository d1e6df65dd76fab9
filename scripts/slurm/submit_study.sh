#!/bin/bash
# Submit a study as SLURM array jobs: one array per depth (teacher; stages from the teacher; stages from
# those; ...), each waiting for the previous one (afterok), then a CPU job that writes the report.
# Finished (stage, seed) pairs are skipped by the study itself, so resubmitting after a failure is safe.
#
#   bash scripts/slurm/submit_study.sh configs/study/stereoset_minilm.yaml
set -euo pipefail
config=$1
mkdir -p runs/slurm
python -m lmshrink.study "$config" --list > runs/slurm/study_tasks.txt
dependency=()
for wave in $(cut -d' ' -f1 runs/slurm/study_tasks.txt | sort -n | uniq); do
  tasks=runs/slurm/study_wave$wave.txt
  awk -v w="$wave" '$1 == w {print $2, $3}' runs/slurm/study_tasks.txt > "$tasks"
  count=$(wc -l < "$tasks")
  job=$(sbatch --parsable "${dependency[@]}" --array=0-$((count - 1)) scripts/slurm/study.sbatch "$config" "$tasks")
  echo "wave $wave: $count task(s), job $job"
  dependency=(--dependency=afterok:$job)
done
sbatch "${dependency[@]}" --job-name=lmshrink-study-report --ntasks=1 --cpus-per-task=4 --time=00:30:00 \
  --wrap "source .venv/bin/activate && python -m lmshrink.study $config --report-only"
