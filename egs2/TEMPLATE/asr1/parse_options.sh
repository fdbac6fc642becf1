#!/usr/bin/env bash
# Kaldi-style option parsing, self-contained: every "--name value" sets the shell variable `name`,
# which must already be defined by the calling script (dashes become underscores). Sourced, not run.
while [ $# -gt 0 ]; do
    case "$1" in
        --help|-h)
            echo "${help_message:-see the top of $0}"
            exit 0 ;;
        --)
            shift; break ;;   # the rest is for another script
        --*=*)
            name="${1%%=*}"; value="${1#*=}"; shift ;;
        --*)
            if [ $# -lt 2 ]; then echo "$0: option $1 needs a value" >&2; exit 1; fi
            name="$1"; value="$2"; shift 2 ;;
        *)
            break ;;
    esac
    name="${name#--}"; name="${name//-/_}"
    if ! declare -p "${name}" >/dev/null 2>&1; then
        echo "$0: unknown option --${name}" >&2
        exit 1
    fi
    printf -v "${name}" '%s' "${value}"
done
