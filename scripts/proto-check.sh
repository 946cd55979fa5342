#!/usr/bin/env bash
# Fails (exit 1) when the generated code committed under proto/ differs from
# what scripts/proto.sh would generate now, or is missing. Regenerates into a
# temporary directory; never modifies the tree. Meant for CI and tests.
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/proto.sh" --check
