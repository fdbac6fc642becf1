# Environment of the recipes: the project's virtualenv (make install) comes first on PATH.
repo_root=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../../.." && pwd)
if [ -x "${repo_root}/.venv/bin/python" ]; then
    export PATH="${repo_root}/.venv/bin:${PATH}"
fi
export PYTHONUNBUFFERED=1
export LC_ALL=C.UTF-8
