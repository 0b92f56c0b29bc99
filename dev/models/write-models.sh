#!/usr/bin/env bash
# Writes the synthetic random-weight GGUFs (src/Kvq/Formats/Gguf/Synthetic/SyntheticModels.cs) into a folder.
# usage: dev/models/write-models.sh OUT_DIR [--types f32,q8_0,q4_0] [--only llama,qwen3] [--spm-vocab FILE.gguf]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec dotnet run -c Release --project "$here/SynthModels" -- "$@"
