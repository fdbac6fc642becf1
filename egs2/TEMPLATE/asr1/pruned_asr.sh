#!/usr/bin/env bash
# Stage runner shared by the espnet_prune recipes (the counterpart of ESPnet's egs2/TEMPLATE/asr1/asr.sh).
# A recipe's run.sh calls it with corpus options; every stage is a `python -m` entry point.
#
# Stages (numbers follow ESPnet's asr.sh where they overlap):
#   1  data preparation: local/data.sh writes Kaldi-style dirs data/<set>/{wav.scp,text,utt2spk,spk2utt}
#   2  formatting: dump/raw/<set>/ with utt2num_samples; utterances outside
#      [min_seconds, max_seconds] are dropped (asr.sh's stages 2-4 in one step)
#   5  token list: data/token_list/<token_type>/tokens.txt (+ bpe.model)
#   10 statistics: exp/<stats_dir>/{train,valid}/speech_shape, text_shape.<token_type>
#   11 training: exp/<asr_tag>/ (config.yaml, latest.pth, train.log, images/)
#   12 mask removal: exp/<asr_tag>/pruned/{config.yaml,model.pth} (gated runs only)
#   13 decoding: exp/<asr_tag>/<model>/decode_<inference_tag>/<set>/1best_recog/text
#   14 scoring: exp/<asr_tag>/<model>/decode_<inference_tag>/RESULTS.md
set -euo pipefail

log() { echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${0##*/}:${BASH_LINENO[0]}) $*"; }

stage=1                 # first stage to run
stop_stage=14           # last stage to run
ngpu=0                  # GPUs for training (0: CPU)
nj=2                    # parallel decoding jobs
python=python3          # the Python that has espnet_prune installed
train_cmd=""            # prefix of the training command (cmd.sh: e.g. a cluster launcher)
decode_cmd=""           # prefix of each decoding job
local_data_opts=""      # options passed to local/data.sh
train_set=train         # training data dir name
valid_set=dev           # validation data dir name
test_sets="test"        # evaluation data dir names
min_seconds=0.5         # drop shorter training utterances
max_seconds=20          # drop longer training utterances
token_type=char         # char or bpe
nbpe=300                # sentencepiece units for token_type=bpe
asr_config=""           # training config (conf/tuning/*.yaml)
asr_tag=""              # exp/<asr_tag>; default: the config's file name
asr_args=""             # extra training options, e.g. "--encoder_conf ssl_checkpoint=/path/wav2vec_small.pt"
init_from_exp=""        # initialise training from <dir>/latest.pth (e.g. a dense run: the demo's stand-in SSL model)
removal_args=""         # extra options of mask removal, e.g. "--allow_budget_miss" for a smoke run that stops early
inference_tag=ctc       # decode_<inference_tag>
inference_args="--ctc_greedy true --batch_size 8"  # decoding options: batched best-path CTC by default; ESPnet beam search e.g. "--ctc_weight 1.0 --beam_size 10"
seconds=10              # reference duration for the MACs reported by scoring
intent_first=false      # SLU: the first token is the intent (scored as accuracy)
score_opts=""           # extra options of bin/score, e.g. "--entity" (SLURP entity mode: SLU-F1)
help_message="Usage: $0 --asr_config conf/tuning/x.yaml [--stage N --stop_stage M --test_sets 'a b' ...]"

. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/parse_options.sh"
# The recipe's environment and job launchers, as ESPnet's asr.sh reads them (options above may override).
[ -f ./path.sh ] && . ./path.sh

[ -n "${asr_config}" ] || { log "error: --asr_config is required"; exit 1; }
[ -f "${asr_config}" ] || { log "error: --asr_config ${asr_config}: no such file"; exit 1; }
[ -n "${asr_tag}" ] || asr_tag="asr_$(basename "${asr_config}" .yaml)"
data=data
dump=dump/raw
token_list_dir=data/token_list/${token_type}
token_list=${token_list_dir}/tokens.txt
stats_dir=exp/asr_stats_raw_${token_type}
exp_dir=exp/${asr_tag}
token_opts=""
[ "${token_type}" = bpe ] && token_opts="--bpemodel ${token_list_dir}/bpe.model"
# SLU with characters: the intent labels are whole tokens (stage 5 writes them to nlsyms.txt).
[ "${token_type}" = char ] && [ "${intent_first}" = true ] && token_opts="--non_linguistic_symbols ${token_list_dir}/nlsyms.txt"

data_opts() {  # training/validation data options of asr_train
    echo "--train_data_path_and_name_and_type ${dump}/${train_set}/wav.scp,speech,sound" \
         "--train_data_path_and_name_and_type ${dump}/${train_set}/text,text,text" \
         "--valid_data_path_and_name_and_type ${dump}/${valid_set}/wav.scp,speech,sound" \
         "--valid_data_path_and_name_and_type ${dump}/${valid_set}/text,text,text" \
         "--token_type ${token_type} --token_list ${token_list} ${token_opts}"
}

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then
    log "stage 1: data preparation (local/data.sh ${local_data_opts})"
    # shellcheck disable=SC2086
    local/data.sh ${local_data_opts}
fi

if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 2 ]; then
    log "stage 2: formatting ${train_set} ${valid_set} ${test_sets} into ${dump}"
    # shellcheck disable=SC2086
    ${python} -m espnet_prune.bin.format_data --data_dir ${data} --dump_dir ${dump} \
        --sets ${train_set} ${valid_set} ${test_sets} --min_seconds ${min_seconds} --max_seconds ${max_seconds}
fi

if [ ${stage} -le 5 ] && [ ${stop_stage} -ge 5 ]; then
    log "stage 5: ${token_type} token list in ${token_list_dir}"
    ${python} -m espnet_prune.bin.make_tokens --text ${dump}/${train_set}/text --token_type ${token_type} --intent_first ${intent_first} \
        --nbpe ${nbpe} --out_dir ${token_list_dir}
fi

if [ ${stage} -le 10 ] && [ ${stop_stage} -ge 10 ]; then
    log "stage 10: collecting shapes in ${stats_dir}"
    mkdir -p exp
    # shellcheck disable=SC2046,SC2086
    ${python} -m espnet_prune.bin.asr_train --collect_stats true --config ${asr_config} $(data_opts) \
        --train_shape_file ${dump}/${train_set}/wav.scp --valid_shape_file ${dump}/${valid_set}/wav.scp \
        --output_dir ${stats_dir} --ngpu 0 ${asr_args} > ${stats_dir}.log 2>&1 \
        || { log "error: see ${stats_dir}.log"; tail -n 20 ${stats_dir}.log; exit 1; }
fi

if [ ${stage} -le 11 ] && [ ${stop_stage} -ge 11 ]; then
    init_opts=""
    if [ -n "${init_from_exp}" ]; then
        [ -f "${init_from_exp}/latest.pth" ] || { log "error: ${init_from_exp}/latest.pth: no such file"; exit 1; }
        init_opts="--init_param ${init_from_exp}/latest.pth"
    fi
    log "stage 11: training ${exp_dir} (log: ${exp_dir}/train.log)"
    mkdir -p ${exp_dir}
    # shellcheck disable=SC2046,SC2086
    ${train_cmd} ${python} -m espnet_prune.bin.asr_train --config ${asr_config} $(data_opts) \
        --train_shape_file ${stats_dir}/train/speech_shape --valid_shape_file ${stats_dir}/valid/speech_shape \
        --output_dir ${exp_dir} --ngpu ${ngpu} ${init_opts} ${asr_args} > ${exp_dir}/train.log 2>&1 &
    train_pid=$!
    # Show progress while ESPnet trains: each new per-epoch summary line, once.
    shown=0
    while kill -0 ${train_pid} 2>/dev/null; do
        sleep 5
        summaries=$(grep -h "epoch results" ${exp_dir}/train.log 2>/dev/null || true)
        count=$(printf '%s' "${summaries}" | grep -c . || true)
        if [ "${count}" -gt "${shown}" ]; then
            printf '%s\n' "${summaries}" | tail -n +$(( shown + 1 )) | cut -c1-400
            shown=${count}
        fi
    done
    wait ${train_pid} || { log "error: training failed, see ${exp_dir}/train.log"; tail -n 20 ${exp_dir}/train.log; exit 1; }
fi

# The model decoded from here on: the mask-removed one for a gated run, the trained one otherwise.
is_gated() {  # does the run's config have a pruning block in encoder_conf or frontend_conf?
    ${python} -c 'import sys, yaml; c = yaml.safe_load(open(sys.argv[1]))
sys.exit(0 if any((c.get(k) or {}).get("pruning") for k in ("encoder_conf", "frontend_conf")) else 1)' "$1"
}
if [ ${stop_stage} -ge 12 ] && is_gated ${exp_dir}/config.yaml; then
    model_dir=${exp_dir}/pruned
    model_config=${model_dir}/config.yaml
    model_file=${model_dir}/model.pth
else
    model_dir=${exp_dir}
    model_config=${exp_dir}/config.yaml
    model_file=${exp_dir}/latest.pth
fi

if [ ${stage} -le 12 ] && [ ${stop_stage} -ge 12 ]; then
    if [ "${model_dir}" = "${exp_dir}/pruned" ]; then
        log "stage 12: removing masks of ${exp_dir}/latest.pth into ${model_dir}"
        # shellcheck disable=SC2086
        ${python} -m espnet_prune.bin.remove_masks --asr_train_config ${exp_dir}/config.yaml \
            --asr_model_file ${exp_dir}/latest.pth --out_dir ${model_dir} ${removal_args}
    else
        log "stage 12: ${exp_dir} is not a pruning run: nothing to remove"
    fi
fi

decode_dir=${model_dir}/decode_${inference_tag}
if [ ${stage} -le 13 ] && [ ${stop_stage} -ge 13 ]; then
    for dset in ${test_sets}; do
        out=${decode_dir}/${dset}
        log "stage 13: decoding ${dset} with ${model_file} into ${out} (${nj} jobs)"
        rm -rf ${out}
        mkdir -p ${out}/split
        split -n l/${nj} -d -a 3 ${dump}/${dset}/wav.scp ${out}/split/keys.
        pids=()
        for keys in ${out}/split/keys.*; do
            job=${keys##*.}
            # shellcheck disable=SC2086
            OMP_NUM_THREADS=1 ${decode_cmd} ${python} -m espnet_prune.bin.asr_inference --ngpu 0 --batch_size 1 \
                --asr_train_config ${model_config} --asr_model_file ${model_file} --key_file ${keys} \
                --data_path_and_name_and_type ${dump}/${dset}/wav.scp,speech,sound \
                --output_dir ${out}/split/out.${job} ${inference_args} > ${out}/split/decode.${job}.log 2>&1 &
            pids+=($!)
        done
        for i in "${!pids[@]}"; do
            wait "${pids[$i]}" || { log "error: decoding job ${i} failed: see ${out}/split/decode.*.log"; exit 1; }
        done
        mkdir -p ${out}/1best_recog
        for f in ${out}/split/out.000/1best_recog/*; do
            f=$(basename "${f}")
            cat ${out}/split/out.*/1best_recog/"${f}" | LC_ALL=C sort > ${out}/1best_recog/"${f}"
        done
    done
fi

if [ ${stage} -le 14 ] && [ ${stop_stage} -ge 14 ]; then
    log "stage 14: scoring ${test_sets} into ${decode_dir}/RESULTS.md"
    intent_opt=""
    [ "${intent_first}" = true ] && intent_opt="--intent_first"
    # shellcheck disable=SC2086
    ${python} -m espnet_prune.bin.score --dump_dir ${dump} --decode_dir ${decode_dir} --sets ${test_sets} \
        --asr_train_config ${model_config} --asr_model_file ${model_file} --seconds ${seconds} \
        --out ${decode_dir}/RESULTS.md ${intent_opt} ${score_opts}
fi
log "done: stages ${stage}-${stop_stage} of ${exp_dir}"
