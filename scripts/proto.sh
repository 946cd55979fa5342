#!/usr/bin/env bash
# Regenerates the Go, gRPC, grpc-gateway and OpenAPI code for the protobuf API
# in proto/ (see proto/buf.gen.yaml).
#
#   scripts/proto.sh          regenerate into proto/ (what `make proto` runs)
#   scripts/proto.sh --check  regenerate into a temporary directory and exit 1
#                             if any generated file in proto/ is stale, missing
#                             or no longer generated; never modifies proto/
#
# The pinned code generators are installed into .tools/bin (git-ignored) when
# missing or at another version; after that the script runs offline. Generated
# files: proto/**/*.pb.go, proto/**/*.pb.gw.go, proto/openapi/*.swagger.json.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

mode=write
case "${1:-}" in
  "") ;;
  --check) mode=check ;;
  *)
    echo "usage: $0 [--check]" >&2
    exit 2
    ;;
esac

tools="$root/.tools/bin"

# tool BINARY PACKAGE VERSION: installs PACKAGE@VERSION into .tools/bin unless
# BINARY is already there and was built from that module version.
tool() {
  local bin="$tools/$1" pkg=$2 version=$3 have=""
  if [[ -x $bin ]]; then
    have=$(go version -m "$bin" 2>/dev/null | awk '$1 == "mod" { print $3; exit }')
  fi
  if [[ $have != "$version" ]]; then
    echo "installing $pkg@$version into .tools/bin" >&2
    GOBIN="$tools" go install "$pkg@$version"
  fi
}

# One `go install` per tool: a shared tool module would downgrade buf.
tool buf github.com/bufbuild/buf/cmd/buf v1.75.0
tool protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go v1.36.12
tool protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc v1.6.2
tool protoc-gen-grpc-gateway github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway v2.33.0
tool protoc-gen-openapiv2 github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2 v2.33.0

# generated DIR: lists generated files under DIR (a proto/ tree), relative to it.
generated() {
  (cd "$1" && find . -path ./third_party -prune -o -type f \
    \( -name '*.pb.go' -o -name '*.pb.gw.go' -o -name '*.swagger.json' \) -print |
    sed 's|^\./||' | LC_ALL=C sort)
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# buf.gen.yaml names plugins relative to proto/, and -o prefixes every out dir.
(cd proto && "$tools/buf" generate -o "$tmp")

new=$(generated "$tmp")
old=$(generated proto)

if [[ $mode == check ]]; then
  stale=()
  while IFS= read -r f; do
    [[ -n $f ]] || continue
    if [[ ! -f proto/$f ]]; then
      stale+=("missing: proto/$f")
    elif ! cmp -s "$tmp/$f" "proto/$f"; then
      stale+=("differs: proto/$f")
    fi
  done <<<"$new"
  while IFS= read -r f; do
    [[ -n $f && ! -f $tmp/$f ]] && stale+=("no longer generated: proto/$f")
  done <<<"$old"
  if ((${#stale[@]})); then
    printf '%s\n' "${stale[@]}" >&2
    echo "generated code in proto/ is stale: run make proto" >&2
    exit 1
  fi
  exit 0
fi

# Write mode: touch only files whose content changed, remove orphans.
while IFS= read -r f; do
  [[ -n $f && ! -f $tmp/$f ]] && rm -f "proto/$f"
done <<<"$old"
while IFS= read -r f; do
  [[ -n $f ]] || continue
  if ! cmp -s "$tmp/$f" "proto/$f" 2>/dev/null; then
    mkdir -p "$(dirname "proto/$f")"
    cp "$tmp/$f" "proto/$f"
  fi
done <<<"$new"
