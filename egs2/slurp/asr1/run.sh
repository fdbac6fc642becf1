#!/usr/bin/env bash
# SLURP spoken language understanding: wav2vec2-base / HuBERT-base fine-tuned to output
# "<intent> <transcript>" while pruned with HJ-Pruning (Peng et al., ICASSP 2023), as an ESPnet recipe.
#
#   ./run.sh --ssl_checkpoint /path/wav2vec_small.pt --slurp_dir /corpora/slurp    # (--download true)
#   ./run.sh --ssl_checkpoint ... --asr_config conf/tuning/train_wav2vec2_base_hj_size_50.yaml
#   ./run.sh --demo true     # no download, CPU: espeak-ng commands, tiny dense model, HJ-MAC, table
#   ./run.sh --demo true --demo_source real_slurp   # the real SLURP sentences spoken by espeak-ng
#   ./run.sh ... --entity true   # entity mode: intent + entity spans + transcript, scored with SLU-F1
#
# Stages (see ../../TEMPLATE/asr1/pruned_asr.sh): 1 data, 2 formatting, 5 tokens, 10 statistics,
# 11 training, 12 mask removal, 13 decoding, 14 scoring (intent accuracy + WER of the transcript;
# with --entity also scenario/action accuracy, SLU-F1 and span F1).
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"
. ./path.sh
. ./cmd.sh

stage=1
stop_stage=14
ngpu=1
nj=""                   # decoding jobs (default: 8, demo: 1)
python=python3          # the Python that has espnet_prune installed (path.sh puts ../../../.venv first)
slurp_dir=downloads/slurp   # SLURP root: dataset/slurp/*.jsonl (+ metadata.json) and audio/slurp_{real,synth}/
download=false          # download SLURP into --slurp_dir first (annotations + about 6 GB of audio)
ssl_checkpoint=""       # wav2vec2 / HuBERT checkpoint: fairseq or S3PRL .pt, Hugging Face dir, torchaudio .pth
asr_config=conf/tuning/train_wav2vec2_base_hj_mac_50.yaml
asr_tag=""              # exp/<asr_tag> (default: asr_<config name>)
asr_args=""             # extra training options for ESPnet, e.g. "--max_epoch 20"
token_type=bpe
nbpe=500
inference_args=""       # default: batched best-path CTC, or joint CTC/attention beam search for a config with a decoder
test_sets="devel test"
entity=false            # SLURP entity mode (as ESPnet's slurp_entity): "<intent> sep [type] fill <WORDS> ... sep <TRANSCRIPT>"
demo=false
demo_source=templates   # demo corpus: templates (project-made commands) or real_slurp (../shared/data/slurp)
demo_sentences=800,100,150  # templates: train,devel,test sentences (2 espeak-ng voices each)
demo_limit=""           # real_slurp: at most this many sentences from devel.jsonl and from test.jsonl
demo_train_args=""      # extra training options of the three demo runs (e.g. "--max_epoch 1" for a smoke test)
demo_removal_args=""    # extra mask removal options of the demo (e.g. "--allow_budget_miss" with "--max_epoch 1")
help_message=$(sed -n '2,13p' "$0")

. ../../TEMPLATE/asr1/parse_options.sh
score_opts=""           # bin/score options: --entity scores SLU-F1
[ "${entity}" = true ] && score_opts=--entity

if [ "${demo}" = true ]; then
    # The demo (stand-in SSL model, then dense and HJ-MAC fine-tunings from it, then the table):
    # ../../TEMPLATE/asr1/pruned_asr_demo.sh says how.
    case "${demo_source}" in
        templates) tag=asr_demo ;;
        real_slurp) tag=asr_demo_real_slurp ;;
        *) echo "run.sh: error: --demo_source must be templates or real_slurp, got '${demo_source}'" >&2; exit 1 ;;
    esac
    compare_opts=--intent_first
    [ "${entity}" = true ] && tag=${tag}_entity && compare_opts=--entity
    ./pruned_asr_demo.sh --stage "${stage}" --stop_stage "${stop_stage}" --tag "${tag}" --compare_set test \
        --compare_opts "${compare_opts}" --python "${python}" -- \
        --ngpu 0 --nj "${nj:-1}" --python "${python}" --train_set train --valid_set devel --test_sets test \
        --token_type char --min_seconds 0.3 --max_seconds 15 --intent_first true --score_opts "${score_opts}" \
        --local_data_opts "--demo true --demo_source ${demo_source} --demo_sentences ${demo_sentences// /,} --entity ${entity} --python ${python}${demo_limit:+ --demo_limit ${demo_limit}}" \
        --train_cmd "${train_cmd}" --decode_cmd "${decode_cmd}" \
        --inference_args "${inference_args:---ctc_greedy true --batch_size 8}" --asr_args "${demo_train_args}" --removal_args "${demo_removal_args}"
    exit 0
fi

if [ -n "${ssl_checkpoint}" ]; then
    asr_args="--encoder_conf ssl_checkpoint=${ssl_checkpoint} ${asr_args}"
elif [ "${stage}" -le 11 ] && [ "${stop_stage}" -ge 10 ]; then
    echo "run.sh: error: --ssl_checkpoint is required to train (a wav2vec2/HuBERT checkpoint); see README.md" >&2
    exit 1
fi
inference_tag=ctc
if [ -z "${inference_args}" ]; then
    if grep -q '^decoder: *[a-z]' "${asr_config}"; then  # joint CTC/attention decoding, as trained
        inference_args="--ctc_weight 0.3 --beam_size 10 --batch_size 1"
        inference_tag=ctc0.3_beam10
    else
        inference_args="--ctc_greedy true --batch_size 8"
    fi
fi

[ "${entity}" = true ] && [ -z "${asr_tag}" ] && asr_tag="asr_$(basename "${asr_config}" .yaml)_entity"
./pruned_asr.sh --stage "${stage}" --stop_stage "${stop_stage}" --ngpu "${ngpu}" --nj "${nj:-8}" --python "${python}" \
    --local_data_opts "--slurp_dir ${slurp_dir} --download ${download} --entity ${entity} --python ${python}" \
    --train_cmd "${train_cmd}" --decode_cmd "${decode_cmd}" \
    --train_set train --valid_set devel --test_sets "${test_sets}" --intent_first true \
    --token_type "${token_type}" --nbpe "${nbpe}" --asr_config "${asr_config}" --asr_tag "${asr_tag}" \
    --asr_args "${asr_args}" --inference_args "${inference_args}" --inference_tag "${inference_tag}" \
    --score_opts "${score_opts}"
