#!/usr/bin/env bash
# SLURP spoken language understanding: wav2vec2-base / HuBERT-base fine-tuned to output
# "<intent> <TRANSCRIPT>" while pruned with HJ-Pruning (Peng et al., ICASSP 2023), as an ESPnet recipe.
# Every option is pruned_asr.sh's (./run.sh --help); local/data.sh's go through --local_data_opts.
#
#   ./run.sh --ssl_checkpoint /path/wav2vec_small.pt --local_data_opts "--slurp_dir /corpora/slurp"
#   ./run.sh --ssl_checkpoint ... --local_data_opts "--download true"     # fetch SLURP into downloads/slurp
#   ./run.sh --ssl_checkpoint ... --asr_config conf/tuning/train_wav2vec2_base_hj_mac_50_att.yaml \
#       --inference_config conf/decode_ctc0.3_beam10.yaml                # with a decoder: joint decoding
#   ./run.sh --demo true     # no download, CPU: espeak-ng commands, tiny dense model, HJ-MAC, table
#   ./run.sh --demo true --local_data_opts "--demo_source real_slurp" --demo_tag asr_demo_real_slurp
#   entity mode (intent + entity spans + transcript, scored with SLU-F1; README.md):
#   ./run.sh ... --local_data_opts "--entity true" --score_opts --entity --asr_tag asr_<config>_entity
set -euo pipefail

train_set=train
valid_set=devel
test_sets="devel test"
asr_config=conf/tuning/train_wav2vec2_base_hj_mac_50.yaml
inference_config=conf/decode_ctc_greedy.yaml
demo_pruned_config=conf/demo/train_hj_mac_keep_attention.yaml  # the intent needs attention: gate CNN and FFN

./pruned_asr.sh \
    --train_set "${train_set}" \
    --valid_set "${valid_set}" \
    --test_sets "${test_sets}" \
    --intent_first true \
    --token_type bpe \
    --nbpe 500 \
    --asr_config "${asr_config}" \
    --inference_config "${inference_config}" \
    --demo_test_set test \
    --demo_pruned_config "${demo_pruned_config}" \
    "$@"
