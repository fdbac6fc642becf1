#!/usr/bin/env bash
# The CPU demo flow shared by the espnet_prune recipes (run.sh --demo true, through pruned_asr.sh):
#   1. a tiny wav2vec2 trained densely (conf/demo/train_standin.yaml) stands in for the pre-trained SSL
#      model, which cannot be downloaded here (stages <= 11 of pruned_asr.sh);
#   2. from it, as in the paper, the dense fine-tuning (conf/demo/train_dense.yaml, the reference) and
#      the HJ-MAC pruning fine-tuning (--pruned_config: conf/demo/train_hj_mac.yaml, or for SLU
#      conf/demo/train_hj_mac_keep_attention.yaml) with the same updates, side by side
#      with one thread each (about 30% sooner on a CPU than one after the other); their lines are
#      prefixed [dense] / [hj_mac]; each is trained (HJ-MAC: and its masks removed), decoded, scored
#      and packed (stages 11-14);
#   3. bin/compare prints the dense vs pruned table and writes exp/<tag>_table.md.
# The configs live once in egs2/TEMPLATE/asr1/conf/demo/ (each recipe's conf/demo links there).
# Usage: pruned_asr_demo.sh [--stage N --stop_stage M --tag T --pruned_config C --compare_set S --compare_opts O] -- <pruned_asr.sh options>
set -euo pipefail

stage=1                 # first stage of pruned_asr.sh to run
stop_stage=14           # last stage (the table needs 13: scoring)
tag=asr_demo            # exp/<tag>_standin, exp/<tag>_dense, exp/<tag>_hj_mac, exp/<tag>_table.md
pruned_config=conf/demo/train_hj_mac.yaml  # the HJ-MAC fine-tuning's config
compare_set=test        # the test set of the table
compare_opts=""         # extra options of bin/compare (e.g. --intent_first)
python=python3          # the Python that has espnet_prune installed
help_message=$(sed -n '2,13p' "$0")

. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/parse_options.sh"
common=("$@")
minutes() { echo "$(( $1 / 60 )) min $(( $1 % 60 )) s"; }
start=${SECONDS}
if [ "${stage}" -le 11 ]; then
    ./pruned_asr.sh "${common[@]}" --stage "${stage}" --stop_stage "$(( stop_stage < 11 ? stop_stage : 11 ))" \
        --asr_config conf/demo/train_standin.yaml --asr_tag "${tag}_standin"
fi
standin_done=${SECONDS}
if [ "${stop_stage}" -ge 11 ]; then
    pids=()
    for run in dense hj_mac; do
        config=conf/demo/train_dense.yaml
        [ "${run}" = hj_mac ] && config=${pruned_config}
        OMP_NUM_THREADS=1 ./pruned_asr.sh "${common[@]}" --stage "$(( stage > 11 ? stage : 11 ))" \
            --stop_stage "${stop_stage}" --asr_config "${config}" --asr_tag "${tag}_${run}" \
            --init_from_exp "exp/${tag}_standin" 2>&1 | sed -u "s/^/[${run}] /" &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do
        wait "${pid}" || { echo "${0##*/}: error: a demo fine-tuning failed (see above)" >&2; exit 1; }
    done
fi
if [ "${stop_stage}" -ge 13 ]; then
    # shellcheck disable=SC2086  # compare_opts is a list of options
    "${python}" -m espnet_prune.bin.compare --dump_dir dump/raw --sets "${compare_set}" ${compare_opts} \
        --run "dense=exp/${tag}_dense" --run "HJ-MAC=exp/${tag}_hj_mac/pruned" --out "exp/${tag}_table.md"
fi
echo "demo finished in $(minutes $(( SECONDS - start ))) (data and stand-in: $(minutes $(( standin_done - start ))); fine-tunings, decoding, table: $(minutes $(( SECONDS - standin_done ))); load average: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?'))"
