#!/usr/bin/env bash
# Local job launcher with the calling convention of Kaldi's utils/run.pl (what ESPnet's cmd.sh names
# train_cmd / decode_cmd / cuda_cmd), so that a recipe can swap it for queue.pl or slurm.pl:
#
#   run_jobs.sh [--gpu N] [--mem M] [--num_threads N] [--max_jobs_run N] [JOB=1:N] LOG COMMAND...
#
# With JOB=1:N the command runs N times, in parallel (at most --max_jobs_run at once), with every JOB in
# LOG and COMMAND replaced by the job number: one log per job. As with run.pl, the words of COMMAND are
# joined into a bash command line (a word with blanks is quoted; pass '|' or '>' as words of their own).
# The log gets the command, its output and the exit code. The status is 0 when every job succeeded, else 1 with a line naming the failed logs.
# --gpu, --mem and --num_threads are accepted for compatibility with cluster launchers; locally the
# command sees the machine as it is.
set -euo pipefail

max_jobs_run=0   # 0: all at once
while [ $# -gt 0 ]; do
    case "$1" in
        --gpu|--mem|--num_threads) shift 2 ;;
        --max_jobs_run) max_jobs_run=$2; shift 2 ;;
        --num_nodes) echo "${0##*/}: runs jobs on this machine only; --num_nodes needs a cluster launcher (cmd.sh)" >&2; exit 1 ;;
        --*) echo "${0##*/}: unknown option $1" >&2; exit 1 ;;
        *) break ;;
    esac
done
first=1
last=1
job_var=""
if [[ $# -gt 0 && "$1" =~ ^([A-Za-z_]+)=([0-9]+):([0-9]+)$ ]]; then
    job_var=${BASH_REMATCH[1]}; first=${BASH_REMATCH[2]}; last=${BASH_REMATCH[3]}
    shift
fi
if [ $# -lt 2 ]; then
    echo "usage: ${0##*/} [--gpu N] [--mem M] [--num_threads N] [--max_jobs_run N] [JOB=1:N] LOG COMMAND..." >&2
    exit 1
fi
log_pattern=$1
shift
command_pattern=""
for word in "$@"; do  # as run.pl: a word with blanks (or an empty one) stays one word, quoted
    if [[ "${word}" =~ ^[^[:space:]]+$ ]]; then command_pattern+="${word} "; else command_pattern+="$(printf '%q' "${word}") "; fi
done

for_job() {  # TEXT N: TEXT with the job variable (if any) replaced by N
    if [ -n "${job_var}" ]; then printf '%s\n' "${1//${job_var}/$2}"; else printf '%s\n' "$1"; fi
}

run_one() {  # N: runs job N's command with its log
    local log command
    log=$(for_job "${log_pattern}" "$1")
    command=$(for_job "${command_pattern}" "$1")
    mkdir -p "$(dirname "${log}")"
    {
        echo "# ${command}"
        echo "# Started at $(date)"
    } > "${log}"
    local status=0
    bash -c "${command}" >> "${log}" 2>&1 || status=$?
    echo "# Ended (code ${status}) at $(date)" >> "${log}"
    return "${status}"
}

pids=()
logs=()
for (( job = first; job <= last; job++ )); do
    if [ "${max_jobs_run}" -gt 0 ]; then
        while [ "$(jobs -rp | wc -l)" -ge "${max_jobs_run}" ]; do wait -n || true; done
    fi
    run_one "${job}" &
    pids+=($!)
    logs+=("$(for_job "${log_pattern}" "${job}")")
done
failed=()
for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || failed+=("${logs[$i]}")
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "${0##*/}: ${#failed[@]} / ${#pids[@]} job(s) failed, see ${failed[*]}" >&2
    exit 1
fi
