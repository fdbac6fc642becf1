#!/usr/bin/env bash
# Stage 1 of the SLURP recipe: Kaldi-style data dirs data/{train,devel,test}/ (wav.scp, utt2spk, spk2utt,
# text "<scenario>_<action> <TRANSCRIPT>") from
#   - a SLURP copy (--slurp_dir ROOT with ROOT/dataset/slurp/*.jsonl and ROOT/audio/slurp_{real,synth}/),
#     or the two halves given apart (--annotations_dir, --audio_dir);
#   - a download into --slurp_dir (--download true: GitHub annotations + Zenodo audio, about 6 GB);
#   - (--demo true) a SLURP-layout corpus synthesized with espeak-ng, no download:
#       --demo_source templates    project-made voice commands, 16 intents, held-out test phrasings
#       --demo_source real_slurp   the real SLURP sentences of --slurp_annotations (devel.jsonl: train and,
#                                  every 10th sentence, devel; test.jsonl: test), 60 intents
# Speakers: the usrid of metadata.json when present (the real corpus and both demo corpora have one);
# without it every recording is its own speaker (utterance id = speaker id = file stem).
# --entity true: SLURP entity mode, text "<intent> sep [type] fill <WORDS> ... sep <TRANSCRIPT>" from
# the annotations' entity spans (espnet_prune/data/slurp_entity.py).
set -euo pipefail

slurp_dir=downloads/slurp   # SLURP root (dataset/slurp/ and audio/ inside)
annotations_dir=""          # override: folder with the jsonl files (default <slurp_dir>/dataset/slurp)
audio_dir=""                # override: folder with slurp_real/ and slurp_synth/ (default <slurp_dir>/audio)
download=false              # download SLURP into --slurp_dir first
skip_bad=false              # skip (and count) bad jsonl lines / missing audio instead of failing
entity=false                # entity mode: the text also carries the entity spans (scored with SLU-F1)
demo=false                  # synthesize a demo corpus instead (no download)
demo_source=templates       # templates or real_slurp
demo_sentences="800,100,150"  # templates: train,devel,test sentences (2 voices each)
demo_limit=""               # real_slurp: at most this many sentences of devel.jsonl and of test.jsonl
slurp_annotations="$(dirname "$(readlink -f "$0")")/../../../../../shared/data/slurp"  # real_slurp source
download_dir=downloads      # where the demo corpora are written
python=python3

. "$(dirname "$(readlink -f "$0")")/../../../TEMPLATE/asr1/parse_options.sh"

opts=()
[ "${skip_bad}" = true ] && opts+=(--skip_bad)
[ "${entity}" = true ] && opts+=(--entity)

if [ "${demo}" = true ]; then
    case "${demo_source}" in
        templates)
            read -r n_train n_devel n_test <<< "${demo_sentences//,/ }"
            corpus=${download_dir}/demo_templates_${n_train}_${n_devel}_${n_test}
            synth_opts=(--n_train "${n_train}" --n_devel "${n_devel}" --n_test "${n_test}") ;;
        real_slurp)
            [ -f "${slurp_annotations}/devel.jsonl" ] && [ -f "${slurp_annotations}/test.jsonl" ] || {
                echo "local/data.sh: error: --slurp_annotations ${slurp_annotations}: no devel.jsonl/test.jsonl" >&2
                exit 1
            }
            corpus=${download_dir}/demo_real_slurp${demo_limit:+_${demo_limit}}
            synth_opts=(--from_annotations "${slurp_annotations}")
            [ -n "${demo_limit}" ] && synth_opts+=(--limit "${demo_limit}") ;;
        *)
            echo "local/data.sh: error: --demo_source must be templates or real_slurp, got '${demo_source}'" >&2
            exit 1 ;;
    esac
    if [ ! -d "${corpus}/dataset/slurp" ]; then
        echo "synthesizing the ${demo_source} demo corpus into ${corpus} (espeak-ng)"
        ${python} -m espnet_prune.bin.synthesize_corpus slurp --out_dir "${corpus}" "${synth_opts[@]}"
    fi
    ${python} -m espnet_prune.bin.prepare_slurp --slurp_dir "${corpus}" --out_dir data "${opts[@]}"
    exit 0
fi

[ "${download}" = true ] && opts+=(--download)
[ -n "${annotations_dir}" ] && opts+=(--annotations_dir "${annotations_dir}")
[ -n "${audio_dir}" ] && opts+=(--audio_dir "${audio_dir}")
if [ "${download}" != true ] && [ -z "${annotations_dir}" ] && [ ! -d "${slurp_dir}/dataset/slurp" ]; then
    echo "local/data.sh: error: ${slurp_dir}/dataset/slurp does not exist; give --slurp_dir of a SLURP copy" \
         "or --download true to fetch it there" >&2
    exit 1
fi
${python} -m espnet_prune.bin.prepare_slurp --slurp_dir "${slurp_dir}" --out_dir data "${opts[@]}"
