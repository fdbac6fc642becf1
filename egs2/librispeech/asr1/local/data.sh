#!/usr/bin/env bash
# Stage 1 of the LibriSpeech recipe: Kaldi-style data dirs in data/ from a LibriSpeech copy, a download
# from openslr, or (--demo true) a LibriSpeech-layout corpus synthesized with espeak-ng.
set -euo pipefail

librispeech_dir=""       # existing .../LibriSpeech folder (skips the download)
download_dir=downloads   # where subsets are downloaded (resumable, md5-checked) when no librispeech_dir
subsets="train-clean-100 dev-clean dev-other test-clean test-other"
demo=false               # synthesize the demo corpus instead (no download)
demo_sentences=600,100,100   # train,dev,test sentences of the demo corpus
python=python3

. "$(dirname "$(readlink -f "$0")")/../../../TEMPLATE/asr1/parse_options.sh"

if [ "${demo}" = true ]; then
    IFS=, read -r n_train n_dev n_test <<< "${demo_sentences}"
    corpus=${download_dir}/demo_corpus_${n_train}_${n_dev}_${n_test}
    if [ ! -d "${corpus}/LibriSpeech" ]; then
        echo "synthesizing the demo corpus into ${corpus} (espeak-ng)"
        ${python} -m espnet_prune.bin.synthesize_corpus librispeech --out_dir "${corpus}" \
            --n_train "${n_train}" --n_dev "${n_dev}" --n_test "${n_test}"
    fi
    librispeech_dir=${corpus}/LibriSpeech
    subsets="train-clean-100 dev-clean test-clean"
fi

# shellcheck disable=SC2086
if [ -n "${librispeech_dir}" ]; then
    ${python} -m espnet_prune.bin.prepare_librispeech --librispeech_dir "${librispeech_dir}" \
        --subsets ${subsets} --out_dir data
else
    ${python} -m espnet_prune.bin.prepare_librispeech --download_dir "${download_dir}" \
        --subsets ${subsets} --out_dir data
fi
