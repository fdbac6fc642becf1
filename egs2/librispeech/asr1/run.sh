#!/usr/bin/env bash
# LibriSpeech: CTC fine-tuning of wav2vec2-base / HuBERT-base while pruning it with HJ-Pruning
# (Peng et al., ICASSP 2023), as an ESPnet recipe.
#
#   ./run.sh --ssl_checkpoint /path/wav2vec_small.pt --librispeech_dir /corpora/LibriSpeech
#   ./run.sh --ssl_checkpoint ... --asr_config conf/tuning/train_wav2vec2_base_dense.yaml   # the reference
#   ./run.sh --demo true     # no download, CPU: espeak-ng corpus, tiny dense model, HJ-MAC, table
#
# Stages (see ../../TEMPLATE/asr1/pruned_asr.sh): 1 data, 2 formatting, 5 tokens, 10 statistics,
# 11 training, 12 mask removal, 13 decoding, 14 scoring. --stage / --stop_stage select them.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"
. ./path.sh
. ./cmd.sh

stage=1
stop_stage=14
ngpu=1
nj=8
demo=false
librispeech_dir=""      # an existing .../LibriSpeech; empty: download into downloads/
ssl_checkpoint=""       # wav2vec2 / HuBERT checkpoint: fairseq or S3PRL .pt, Hugging Face dir, torchaudio .pth
asr_config=conf/tuning/train_wav2vec2_base_hj_mac_50.yaml
token_type=bpe
nbpe=300
inference_args="--ctc_greedy true --batch_size 8"   # ESPnet beam search instead: "--ctc_weight 1.0 --beam_size 10"
demo_sentences=600,100,100   # demo corpus: train,dev,test sentences (2 voices each)
demo_train_args=""      # extra training options of the three demo runs (e.g. "--max_epoch 1" for a smoke test)
demo_removal_args=""    # extra mask removal options of the demo (e.g. "--allow_budget_miss" with "--max_epoch 1")
help_message=$(sed -n '2,10p' "$0")

. ../../TEMPLATE/asr1/parse_options.sh

if [ "${demo}" = true ]; then
    # The demo (stand-in SSL model, then dense and HJ-MAC fine-tunings from it, then the table):
    # ../../TEMPLATE/asr1/pruned_asr_demo.sh says how.
    ./pruned_asr_demo.sh --stage "${stage}" --stop_stage "${stop_stage}" --tag asr_demo --compare_set test_clean -- \
        --ngpu 0 --nj 1 --train_set train_clean_100 --valid_set dev_clean --test_sets test_clean \
        --token_type char --min_seconds 0.3 --max_seconds 15 \
        --local_data_opts "--demo true --demo_sentences ${demo_sentences}" \
        --asr_args "${demo_train_args}" --removal_args "${demo_removal_args}" --train_cmd "${train_cmd}" --decode_cmd "${decode_cmd}"
    exit 0
fi

asr_args=""
if [ -n "${ssl_checkpoint}" ]; then
    asr_args="--encoder_conf ssl_checkpoint=${ssl_checkpoint}"
elif [ "${stage}" -le 11 ] && [ "${stop_stage}" -ge 10 ]; then
    echo "run.sh: error: --ssl_checkpoint is required to train (a wav2vec2/HuBERT checkpoint); see README.md" >&2
    exit 1
fi
local_data_opts=""
[ -n "${librispeech_dir}" ] && local_data_opts="--librispeech_dir ${librispeech_dir}"

./pruned_asr.sh --stage "${stage}" --stop_stage "${stop_stage}" --ngpu "${ngpu}" --nj "${nj}" \
    --local_data_opts "${local_data_opts}" --train_cmd "${train_cmd}" --decode_cmd "${decode_cmd}" \
    --train_set train_clean_100 --valid_set dev_clean --test_sets "dev_clean dev_other test_clean test_other" \
    --token_type "${token_type}" --nbpe "${nbpe}" --asr_config "${asr_config}" --asr_args "${asr_args}" \
    --inference_args "${inference_args}"
