#!/usr/bin/env bash
# LibriSpeech: CTC fine-tuning of wav2vec2-base / HuBERT-base while pruning it with HJ-Pruning
# (Peng et al., ICASSP 2023), as an ESPnet recipe. Every option is pruned_asr.sh's (./run.sh --help).
#
#   ./run.sh --ssl_checkpoint /path/wav2vec_small.pt --local_data_opts "--librispeech_dir /corpora/LibriSpeech"
#   ./run.sh --ssl_checkpoint ... --asr_config conf/tuning/train_wav2vec2_base_dense.yaml   # the reference
#   ./run.sh --demo true     # no download, CPU: espeak-ng corpus, tiny dense model, HJ-MAC, table
#   ./run.sh --demo true --local_data_opts "--demo_sentences 40,10,10" --asr_args "--max_epoch 1" \
#       --removal_args --allow_budget_miss      # a smoke run of the demo
set -euo pipefail

train_set=train_clean_100
valid_set=dev_clean
test_sets="dev_clean dev_other test_clean test_other"
asr_config=conf/tuning/train_wav2vec2_base_hj_mac_50.yaml
inference_config=conf/decode_ctc_greedy.yaml   # ESPnet's beam search: conf/decode_ctc_beam10.yaml

./pruned_asr.sh \
    --train_set "${train_set}" \
    --valid_set "${valid_set}" \
    --test_sets "${test_sets}" \
    --token_type bpe \
    --nbpe 300 \
    --asr_config "${asr_config}" \
    --inference_config "${inference_config}" \
    --demo_test_set test_clean \
    "$@"
