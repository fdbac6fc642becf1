#!/usr/bin/env bash
# Stage runner shared by the espnet_prune recipes: the counterpart of ESPnet's egs2/TEMPLATE/asr1/asr.sh,
# with its stage numbers. A recipe's run.sh sets its corpus options and passes its own options on ("$@").
#
# Stages:
#   1  data preparation: local/data.sh writes Kaldi-style dirs data/<set>/{wav.scp,text,utt2spk,spk2utt}
#   2  formatting: dump/raw/<set>/ with utt2num_samples; training utterances outside
#      [min_seconds, max_seconds] are dropped (asr.sh's stages 2-4 in one step)
#   5  token list: data/token_list/<token_type>/tokens.txt (+ bpe.model)
#   10 statistics: exp/asr_stats_raw_<token_type>/{train,valid}/speech_shape, text_shape.<token_type>
#   11 training: exp/<asr_tag>/ (config.yaml, latest.pth, train.log, images/); a rerun resumes from
#      exp/<asr_tag>/checkpoint.pth. A gated run (a pruning block in the config) ends with mask removal:
#      exp/<asr_tag>/pruned/{config.yaml,model.pth}, the model stages 12-14 use
#   12 decoding: <model dir>/decode_<inference_tag>/<set>/1best_recog/text (inference_nj jobs)
#   13 scoring: exp/<asr_tag>/RESULTS.md (ESPnet's layout: environment, then a table of the test sets)
#   14 packing: exp/<asr_tag>/<asr_tag>_{pruned,latest}.zip with espnet2.bin.pack (config, model, tokens, RESULTS.md)
# With --demo true the CPU demo runs instead (pruned_asr_demo.sh): a stand-in SSL model, the dense and the
# HJ-MAC fine-tunings from conf/demo/ (egs2/TEMPLATE/asr1/conf/demo), each through stages 11-14, then a table.
set -euo pipefail

log() { echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${0##*/}:${BASH_LINENO[0]}) $*"; }
die() { echo "${0##*/}: error: $*" >&2; exit 1; }
require() {  # FILE WHAT-MAKES-IT: stop with one line when FILE is missing
    [ -e "$1" ] || die "$1: missing ($2)"
}

# ---- options begin (--help lists them; each is --name value)
# General
stage=1                 # first stage to run
stop_stage=14           # last stage to run
python=python3          # the Python that has espnet_prune installed
train_module=espnet_prune.bin.asr_train          # python -m module that trains (ESPnet's asr_train + plugin)
inference_module=espnet_prune.bin.asr_inference  # python -m module that decodes (ESPnet's asr_inference + plugin)
# Data (stages 1-5)
local_data_opts=""      # options of local/data.sh, e.g. "--librispeech_dir /corpora/LibriSpeech"
train_set=train         # training data dir name
valid_set=dev           # validation data dir name
test_sets="test"        # evaluation data dir names
min_seconds=0.5         # drop shorter training utterances
max_seconds=20          # drop longer training utterances
token_type=char         # char or bpe
nbpe=300                # sentencepiece units for token_type=bpe
intent_first=false      # SLU: the first word of a text is the intent (one token; scored as accuracy)
# Training (stages 10-11)
asr_config=""           # training config, e.g. conf/tuning/train_wav2vec2_base_hj_mac_50.yaml (required)
asr_tag=""              # exp/<asr_tag>; default: asr_<config file name>
asr_args=""             # extra options of the training module, e.g. "--max_epoch 20"
ssl_checkpoint=""       # SSL checkpoint for configs with ssl_checkpoint: null (fairseq/S3PRL .pt, Hugging Face dir)
init_from_exp=""        # initialise training from <dir>/latest.pth (the demo: its stand-in SSL model)
distill_teacher=""      # model file of the dense fine-tuned run to distil from (pruning.distill.teacher)
ngpu=1                  # GPUs per node for training (0: CPU); N > 1: DDP through espnet2.bin.launch
num_nodes=1             # nodes for DDP training (needs a cluster launcher as cuda_cmd, see cmd.sh)
removal_args=""         # extra options of mask removal, e.g. "--allow_budget_miss" for a smoke run
# Decoding and scoring (stages 12-13)
inference_config=conf/decode_ctc_greedy.yaml  # decoding options (ESPnet's --inference_config)
inference_tag=""        # decode_<inference_tag>; default: the inference config's name without decode_
inference_nj=4          # parallel decoding jobs per test set
gpu_inference=false     # decode on GPUs (one per job, cuda_cmd) instead of CPUs (decode_cmd)
seconds=10              # reference duration for the MACs reported by scoring
score_opts=""           # extra options of espnet_prune.bin.score, e.g. "--entity" (SLURP entity mode)
# Demo (CPU, no download): char tokens, 0.3-15 s utterances, local/data.sh --demo true
demo=false              # run the demo flow (pruned_asr_demo.sh) instead of one experiment
demo_tag=asr_demo       # exp/<demo_tag>_{standin,dense,hj_mac}, exp/<demo_tag>_table.md
demo_test_set=test      # the demo's test set (decoded, scored and in the table)
demo_pruned_config=conf/demo/train_hj_mac.yaml  # the demo's pruning fine-tuning (SLU: ..._keep_attention.yaml)
# ---- options end
help_message="Usage: ./run.sh [options]   (a recipe's run.sh passes every option on to ${0##*/})
$(sed -n '4,18s/^# \{0,1\}//p' "$(readlink -f "${BASH_SOURCE[0]}")")

Options (--name value; default after the name):
$(awk '/^# ---- options end/ { on = 0 }
       on && /^# / { sub(/^# /, ""); print "  " $0 }
       on && /^[a-z_]+=/ { eq = index($0, "="); rest = substr($0, eq + 1); hash = index(rest, "  #");
           value = substr(rest, 1, hash - 1); sub(/ +$/, "", value); comment = substr(rest, hash + 2); sub(/^ *# /, "", comment)
           printf "    --%-18s %-30s %s\n", substr($0, 1, eq - 1), value, comment }
       /^# ---- options begin/ { on = 1 }' "$(readlink -f "${BASH_SOURCE[0]}")")"

cli_args=("$@")
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/parse_options.sh"
[ $# -eq 0 ] || die "unexpected argument '$1' (options are --name value; see --help)"
# The recipe's environment and job launchers (train_cmd, decode_cmd, cuda_cmd), as asr.sh reads them.
[ -f ./path.sh ] && . ./path.sh
[ -f ./cmd.sh ] || die "./cmd.sh: missing (it sets train_cmd, decode_cmd and cuda_cmd)"
. ./cmd.sh

if [ "${demo}" = true ]; then
    compare_opts=${score_opts}
    [ "${intent_first}" = true ] && compare_opts="--intent_first ${compare_opts}"
    # The demo's own settings come after the given options, so that they hold; --inference_nj 1 before
    # them is a default that an --inference_nj given wins over.
    exec ./pruned_asr_demo.sh --stage "${stage}" --stop_stage "${stop_stage}" --tag "${demo_tag}" \
        --pruned_config "${demo_pruned_config}" --compare_set "${demo_test_set}" \
        --compare_opts "${compare_opts}" --python "${python}" -- \
        --inference_nj 1 "${cli_args[@]}" --demo false --ngpu 0 --gpu_inference false --token_type char \
        --min_seconds 0.3 --max_seconds 15 --test_sets "${demo_test_set}" --local_data_opts "--demo true ${local_data_opts}"
fi

[ -n "${asr_config}" ] || die "--asr_config is required (see --help)"
require "${asr_config}" "the --asr_config file"
[ -n "${asr_tag}" ] || asr_tag="asr_$(basename "${asr_config}" .yaml)"
require "${inference_config}" "the --inference_config file"
[ -n "${inference_tag}" ] || { inference_tag=$(basename "${inference_config}" .yaml); inference_tag=${inference_tag#decode_}; }
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
[ -n "${ssl_checkpoint}" ] && asr_args="--encoder_conf ssl_checkpoint=${ssl_checkpoint} ${asr_args}"
[ -n "${distill_teacher}" ] && asr_args="--encoder_conf pruning.distill.teacher=${distill_teacher} ${asr_args}"

config_has() {  # CONFIG (pruning|unset_checkpoint): does the encoder/frontend block have a pruning block / ssl_checkpoint: null?
    ${python} -c 'import sys, yaml
config = yaml.safe_load(open(sys.argv[1])) or {}
blocks = [config.get(k) or {} for k in ("encoder_conf", "frontend_conf")]
if sys.argv[2] == "pruning":
    sys.exit(0 if any(b.get("pruning") for b in blocks) else 1)
sys.exit(0 if any("ssl_checkpoint" in b and b["ssl_checkpoint"] is None for b in blocks) else 1)' "$1" "$2"
}
data_opts() {  # training/validation data options of the training module
    echo "--train_data_path_and_name_and_type ${dump}/${train_set}/wav.scp,speech,sound" \
         "--train_data_path_and_name_and_type ${dump}/${train_set}/text,text,text" \
         "--valid_data_path_and_name_and_type ${dump}/${valid_set}/wav.scp,speech,sound" \
         "--valid_data_path_and_name_and_type ${dump}/${valid_set}/text,text,text" \
         "--token_type ${token_type} --token_list ${token_list} ${token_opts}"
}
require_training_inputs() {  # what stages 10 and 11 read
    if [ -z "${ssl_checkpoint}" ] && config_has "${asr_config}" unset_checkpoint; then
        die "${asr_config} has ssl_checkpoint: null: give --ssl_checkpoint (a wav2vec2/HuBERT checkpoint)"
    fi
    for dset in "${train_set}" "${valid_set}"; do
        for f in wav.scp text; do require "${dump}/${dset}/${f}" "run stage 2"; done
    done
    require "${token_list}" "run stage 5"
}

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then
    log "stage 1: data preparation (local/data.sh ${local_data_opts})"
    require local/data.sh "the recipe's data preparation script"
    # shellcheck disable=SC2086
    local/data.sh ${local_data_opts}
fi

if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 2 ]; then
    all_sets=$(printf '%s\n' ${train_set} ${valid_set} ${test_sets} | awk '!seen[$0]++' | xargs)  # a set once
    log "stage 2: formatting ${all_sets} into ${dump}"
    for dset in ${all_sets}; do
        for f in wav.scp text; do require "${data}/${dset}/${f}" "run stage 1"; done
    done
    # shellcheck disable=SC2086
    ${python} -m espnet_prune.bin.format_data --data_dir ${data} --dump_dir ${dump} \
        --sets ${all_sets} --min_seconds ${min_seconds} --max_seconds ${max_seconds}
fi

if [ ${stage} -le 5 ] && [ ${stop_stage} -ge 5 ]; then
    log "stage 5: ${token_type} token list in ${token_list_dir}"
    require "${dump}/${train_set}/text" "run stage 2"
    ${python} -m espnet_prune.bin.make_tokens --text ${dump}/${train_set}/text --token_type ${token_type} \
        --intent_first ${intent_first} --nbpe ${nbpe} --out_dir ${token_list_dir}
fi

if [ ${stage} -le 10 ] && [ ${stop_stage} -ge 10 ]; then
    log "stage 10: collecting shapes in ${stats_dir} (log: ${stats_dir}/logdir/stats.log)"
    require_training_inputs
    # shellcheck disable=SC2046,SC2086
    ${train_cmd} ${stats_dir}/logdir/stats.log ${python} -m ${train_module} --collect_stats true \
        --config ${asr_config} $(data_opts) \
        --train_shape_file ${dump}/${train_set}/wav.scp --valid_shape_file ${dump}/${valid_set}/wav.scp \
        --output_dir ${stats_dir} --ngpu 0 ${asr_args} \
        || { tail -n 20 ${stats_dir}/logdir/stats.log >&2; die "statistics failed, see ${stats_dir}/logdir/stats.log"; }
fi

if [ ${stage} -le 11 ] && [ ${stop_stage} -ge 11 ]; then
    require_training_inputs
    for split in train valid; do require "${stats_dir}/${split}/speech_shape" "run stage 10"; done
    init_opts=""
    if [ -n "${init_from_exp}" ]; then
        require "${init_from_exp}/latest.pth" "the --init_from_exp run"
        init_opts="--init_param ${init_from_exp}/latest.pth"
    fi
    [ -z "${distill_teacher}" ] || require "${distill_teacher}" "the dense fine-tuning to distil from (--distill_teacher)"
    [ -f "${exp_dir}/checkpoint.pth" ] && log "stage 11: resuming ${exp_dir} from its checkpoint.pth"
    log "stage 11: training ${exp_dir} (log: ${exp_dir}/train.log; ngpu ${ngpu}, nodes ${num_nodes})"
    mkdir -p ${exp_dir}
    # As asr.sh: espnet2.bin.launch starts one process (CPU, 1 GPU) or DDP over ngpu x num_nodes GPUs
    # through cuda_cmd; --resume true continues from checkpoint.pth when a previous run left one.
    # shellcheck disable=SC2046,SC2086
    ${python} -m espnet2.bin.launch --cmd "${cuda_cmd}" --log ${exp_dir}/train.log --ngpu ${ngpu} \
        --num_nodes ${num_nodes} --init_file_prefix ${exp_dir}/.dist_init_ --multiprocessing_distributed true -- \
        ${python} -m ${train_module} --config ${asr_config} $(data_opts) \
        --train_shape_file ${stats_dir}/train/speech_shape --valid_shape_file ${stats_dir}/valid/speech_shape \
        --resume true --output_dir ${exp_dir} ${init_opts} ${asr_args} > ${exp_dir}/launch.log 2>&1 &
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
    wait ${train_pid} || { tail -n 20 ${exp_dir}/launch.log ${exp_dir}/train.log >&2 || true
                           die "training failed, see ${exp_dir}/train.log (launcher: ${exp_dir}/launch.log)"; }
    if config_has ${exp_dir}/config.yaml pruning; then
        log "stage 11: removing the masks of ${exp_dir}/latest.pth into ${exp_dir}/pruned"
        # shellcheck disable=SC2086
        ${python} -m espnet_prune.bin.remove_masks --asr_train_config ${exp_dir}/config.yaml \
            --asr_model_file ${exp_dir}/latest.pth --out_dir ${exp_dir}/pruned ${removal_args}
    fi
fi

if [ ${stop_stage} -ge 12 ] && [ ${stage} -le 14 ]; then
    # The model of stages 12-14: the mask-removed one for a gated run, the trained one otherwise.
    require ${exp_dir}/config.yaml "run stage 11"
    if config_has ${exp_dir}/config.yaml pruning; then
        model_dir=${exp_dir}/pruned
        model_file=${model_dir}/model.pth
        require ${model_file} "run stage 11: a gated run ends with mask removal"
    else
        model_dir=${exp_dir}
        model_file=${model_dir}/latest.pth
        require ${model_file} "run stage 11"
    fi
    model_config=${model_dir}/config.yaml
    decode_dir=${model_dir}/decode_${inference_tag}
fi

if [ ${stage} -le 12 ] && [ ${stop_stage} -ge 12 ]; then
    if [ "${gpu_inference}" = true ]; then _cmd=${cuda_cmd}; _ngpu=1; else _cmd=${decode_cmd}; _ngpu=0; fi
    for dset in ${test_sets}; do
        require "${dump}/${dset}/wav.scp" "run stage 2"
        out=${decode_dir}/${dset}
        logdir=${out}/logdir
        n_utts=$(wc -l < ${dump}/${dset}/wav.scp)
        _nj=$(( inference_nj < n_utts ? inference_nj : n_utts ))
        log "stage 12: decoding ${dset} with ${model_file} into ${out} (${_nj} jobs, log: ${logdir}/asr_inference.*.log)"
        rm -rf ${out}
        mkdir -p ${logdir}
        awk -v nj=${_nj} -v n=${n_utts} -v dir=${logdir} '{ print > (dir "/keys." (int((NR - 1) * nj / n) + 1)) }' \
            ${dump}/${dset}/wav.scp
        # shellcheck disable=SC2086
        ${_cmd} --gpu ${_ngpu} JOB=1:${_nj} ${logdir}/asr_inference.JOB.log \
            OMP_NUM_THREADS=1 ${python} -m ${inference_module} --ngpu ${_ngpu} --config ${inference_config} \
            --asr_train_config ${model_config} --asr_model_file ${model_file} --key_file ${logdir}/keys.JOB \
            --data_path_and_name_and_type ${dump}/${dset}/wav.scp,speech,sound --output_dir ${logdir}/output.JOB \
            || die "decoding ${dset} failed, see ${logdir}/asr_inference.*.log"
        mkdir -p ${out}/1best_recog
        for f in ${logdir}/output.1/1best_recog/*; do
            f=$(basename "${f}")
            cat ${logdir}/output.*/1best_recog/"${f}" | LC_ALL=C sort > ${out}/1best_recog/"${f}"
        done
    done
fi

if [ ${stage} -le 13 ] && [ ${stop_stage} -ge 13 ]; then
    log "stage 13: scoring ${test_sets} into ${exp_dir}/RESULTS.md"
    for dset in ${test_sets}; do require "${decode_dir}/${dset}/1best_recog/text" "run stage 12"; done
    intent_opt=""
    [ "${intent_first}" = true ] && intent_opt="--intent_first"
    # shellcheck disable=SC2086
    ${python} -m espnet_prune.bin.score --dump_dir ${dump} --decode_dir ${decode_dir} --sets ${test_sets} \
        --asr_train_config ${model_config} --asr_model_file ${model_file} --seconds ${seconds} \
        --out ${exp_dir}/RESULTS.md ${intent_opt} ${score_opts}
fi

if [ ${stage} -le 14 ] && [ ${stop_stage} -ge 14 ]; then
    if [ "${model_dir}" = "${exp_dir}" ]; then packed_model=${exp_dir}/${asr_tag}_latest.zip; else packed_model=${exp_dir}/${asr_tag}_pruned.zip; fi
    log "stage 14: packing ${model_file} into ${packed_model}"
    require "${token_list}" "run stage 5"
    require "${exp_dir}/RESULTS.md" "run stage 13"
    pack_opts="--option ${token_list}"
    [ "${token_type}" = bpe ] && pack_opts+=" --option ${token_list_dir}/bpe.model"
    [ "${token_type}" = char ] && [ "${intent_first}" = true ] && pack_opts+=" --option ${token_list_dir}/nlsyms.txt"
    # shellcheck disable=SC2086
    ${python} -m espnet2.bin.pack asr --asr_train_config ${model_config} --asr_model_file ${model_file} \
        ${pack_opts} --option ${exp_dir}/RESULTS.md --outpath ${packed_model}
fi
log "done: stages ${stage}-${stop_stage} of ${exp_dir}"
