#!/usr/bin/env bash
# Builds the Debian package: target/debian/qaloop_<version>-1_<arch>.deb.
# Needs cargo-deb (`cargo install cargo-deb --locked`) and dpkg-dev (dpkg-shlibdeps, strip).
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
if ! cargo deb --version >/dev/null 2>&1; then
  echo "installing cargo-deb" >&2
  cargo install cargo-deb --locked
fi

cargo build --locked --release
bin="$CARGO_TARGET_DIR/release/qaloop"
# Assets named target/… in Cargo.toml are read from the target folder: generate them there.
# Where [package.metadata.deb] looks for them (relative to the package, whatever the target dir).
assets="$PWD/target/assets"
rm -rf "$assets"
mkdir -p "$assets/man" "$assets/completions"
"$bin" generate man "$assets/man" >/dev/null
"$bin" generate completions bash >"$assets/completions/qaloop.bash"
"$bin" generate completions zsh >"$assets/completions/_qaloop"
"$bin" generate completions fish >"$assets/completions/qaloop.fish"

cargo deb --locked --no-build --strip --no-separate-debug-symbols "$@"
ls -l "$CARGO_TARGET_DIR"/debian/*.deb
