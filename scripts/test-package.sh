#!/usr/bin/env bash
# Builds the .deb (scripts/package.sh), installs it with dpkg -i, and runs `qaloop check` as the
# qaloop user against the installed configuration, then removes and purges it. Needs root.
# Without root (or with QALOOP_PACKAGE_TEST=extract) it unpacks the package into a throwaway
# root with dpkg -x instead and checks from there.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

scripts/package.sh >/dev/null
deb=$(ls -t "$CARGO_TARGET_DIR"/debian/qaloop_*.deb | head -n 1)
echo "package: $deb ($(du -h "$deb" | cut -f1))"

fail() { echo "FAIL: $*" >&2; exit 1; }
contents=$(dpkg-deb --contents "$deb")
for path in ./usr/bin/qaloop ./etc/qaloop/qaloop.toml ./etc/qaloop/schedule.toml \
  ./etc/qaloop/bank-holidays.json ./etc/qaloop/templates/reminder.txt.j2 \
  ./usr/share/man/man8/qaloop.8.gz ./usr/share/bash-completion/completions/qaloop \
  ./lib/systemd/system/qaloop.service; do
  grep -q " $path\$" <<<"$contents" || grep -q " ${path/.\/lib/.\/usr\/lib}\$" <<<"$contents" \
    || fail "$path is not in the package"
done
conffiles=$(dpkg-deb --ctrl-tarfile "$deb" | tar -xOf - ./conffiles)
grep -qx /etc/qaloop/qaloop.toml <<<"$conffiles" || fail "qaloop.toml is not a conffile"
grep -qx /etc/qaloop/templates/reminder.txt.j2 <<<"$conffiles" || fail "templates are not conffiles"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mode="${QALOOP_PACKAGE_TEST:-install}"
[ "$(id -u)" -eq 0 ] || mode=extract

if [ "$mode" = install ]; then
  # Leave the machine as found even when a check fails (the database folder and user stay,
  # as they would for an operator).
  trap 'rm -rf "$work"; rm -f /var/lib/qaloop/staff.csv; dpkg -P qaloop >/dev/null 2>&1 || true' EXIT
  dpkg -i "$deb"
  file /usr/bin/qaloop | grep -q stripped || fail "/usr/bin/qaloop is not stripped"
  file /usr/bin/qaloop | grep -q "not stripped" && fail "/usr/bin/qaloop is not stripped"
  getent passwd qaloop | grep -q ':/usr/sbin/nologin$' || fail "no qaloop system user with nologin"
  [ "$(stat -c %U:%G /var/lib/qaloop)" = qaloop:qaloop ] || fail "/var/lib/qaloop not owned by qaloop"
  [ "$(stat -c %a:%G /etc/qaloop/qaloop.toml)" = 640:qaloop ] || fail "qaloop.toml is not 0640 root:qaloop"
  man -w qaloop >/dev/null 2>&1 || [ -f /usr/share/man/man8/qaloop.8.gz ] || fail "no man page"
  unit=$(ls /lib/systemd/system/qaloop.service /usr/lib/systemd/system/qaloop.service 2>/dev/null | head -n 1)
  if command -v systemd-analyze >/dev/null; then
    exposure=$(systemd-analyze security --offline=true --no-pager "$unit" 2>/dev/null \
      | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
    echo "systemd-analyze security exposure: ${exposure:-unknown}"
    [ -z "$exposure" ] || awk "BEGIN{exit !($exposure <= 2.0)}" || fail "exposure $exposure > 2.0"
  fi
  # What an operator adds: HR's staff file and the SMTP credential (as LoadCredential= would).
  install -m 0640 -o root -g qaloop config/example-staff.csv /var/lib/qaloop/staff.csv
  install -d -m 0700 -o qaloop -g qaloop "$work/credentials"
  install -m 0600 -o qaloop -g qaloop /dev/null "$work/credentials/smtp-password"
  echo "not-a-real-password" >"$work/credentials/smtp-password"
  chmod 0711 "$work"
  echo "qaloop check, as the qaloop user, against /etc/qaloop/qaloop.toml:"
  runuser -u qaloop -- env CREDENTIALS_DIRECTORY="$work/credentials" \
    /usr/bin/qaloop --config /etc/qaloop/qaloop.toml check | head -n 4
  status=${PIPESTATUS[0]}
  [ "$status" -eq 0 ] || fail "qaloop check exited $status"
  [ ! -e /var/lib/qaloop/qaloop.db ] || fail "check created the database"
  rm -f /var/lib/qaloop/staff.csv
  dpkg -r qaloop >/dev/null
  [ -e /etc/qaloop/qaloop.toml ] || fail "removing deleted the configuration (conffile)"
  dpkg -P qaloop >/dev/null
  [ ! -e /etc/qaloop/qaloop.toml ] || fail "purging kept the configuration"
else
  root="$work/root"
  dpkg -x "$deb" "$root"
  file "$root/usr/bin/qaloop" | grep -q "not stripped" && fail "qaloop is not stripped"
  mkdir -p "$work/credentials" "$work/state"
  echo "not-a-real-password" >"$work/credentials/smtp-password"
  chmod 0600 "$work/credentials/smtp-password"
  cp config/example-staff.csv "$work/state/staff.csv"
  echo "qaloop check against the unpacked /etc/qaloop/qaloop.toml:"
  CREDENTIALS_DIRECTORY="$work/credentials" \
    QALOOP__DATABASE__URL="sqlite://$work/state/qaloop.db" \
    QALOOP__ORGANISATION__STAFF_FILE="$work/state/staff.csv" \
    QALOOP__BACKUP__DIR="$work/state/backups" \
    "$root/usr/bin/qaloop" --config "$root/etc/qaloop/qaloop.toml" check | head -n 4
  status=${PIPESTATUS[0]}
  [ "$status" -eq 0 ] || fail "qaloop check exited $status"
fi
echo "package test: 1 passed, 0 failed"
