#!/usr/bin/env bash
# Creates .venv-clients/ (ignored by git) with the official `openai` and `ollama` Python
# clients, pinned with hashes in scripts/requirements-clients.txt, for the server tests
# (tests/integration/serve.rs), which use them as real users would.
# Idempotent: does nothing when the environment already matches the requirements.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=".venv-clients"
req="scripts/requirements-clients.txt"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "setup-clients: $venv up to date" >&2
  exit 0
fi
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes \
  --only-binary=:all: --no-deps -r "$req"
"$venv/bin/python" -c 'import openai, ollama, selenium; print("setup-clients: openai", openai.__version__, "ollama and selenium", selenium.__version__, "ready in .venv-clients", flush=True)' >&2
echo "$want" > "$stamp"
