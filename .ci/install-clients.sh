#!/usr/bin/env bash
# Install the publishing clients that tests/test_e2e_publish.py drives: poetry, pdm, hatch and flit,
# and the AWS CLI that tests/test_s3.py migrates a directory into a bucket with (aws s3 sync),
# each in its own virtualenv under .ci/.clients/<tool> (git-ignored), with their commands linked
# into .ci/.clients/bin. twine and uv come from the test extras instead. Also Debian's chromium
# for the browser tests, when run as root on Debian.
#
# Idempotent: a tool whose virtualenv already runs is left alone, so a second run takes a second
# or two. Uses the registries only to install; exits non-zero if any tool fails to install or run.
#
#   bash .ci/install-clients.sh            # install what is missing
#   PYTHON=python3.12 bash .ci/install-clients.sh
#   CLIENTS_REINSTALL=1 bash .ci/install-clients.sh   # start again from empty virtualenvs
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
DEST=.ci/.clients
BIN=$DEST/bin

# tool | pip requirement | executables to link
# pdm: the [locked] extra pins its dependencies; a plain `pip install pdm` resolved an
# incompatible hishel here and crashed on every command.
TOOLS=(
    "poetry|poetry|poetry"
    "pdm|pdm[locked]|pdm"
    "hatch|hatch|hatch"
    "flit|flit|flit"
    "aws|awscli|aws"
)

# The machine's /etc/pip.conf (certificates, mirrors) is fine for installing; a PIP_CONFIG_FILE
# left over from a test environment (e.g. /dev/null) is not.
unset PIP_CONFIG_FILE PIP_REQUIRE_VIRTUALENV PYTHONPATH PYTHONHOME VIRTUAL_ENV
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

mkdir -p "$BIN"
start=$(date +%s)
failed=()
summary=()

works() {  # works TOOL EXE: the linked executable runs and prints its version
    "$DEST/$1/bin/$2" --version >/dev/null 2>&1
}

for spec in "${TOOLS[@]}"; do
    IFS='|' read -r tool requirement exes <<<"$spec"
    venv=$DEST/$tool
    if [[ -n ${CLIENTS_REINSTALL:-} ]]; then
        rm -rf "$venv"
    fi
    ok=1
    for exe in $exes; do
        works "$tool" "$exe" || ok=0
    done
    if [[ $ok == 1 ]]; then
        state="already installed"
    else
        echo "install-clients: installing $requirement into $venv"
        rm -rf "$venv"
        log=$DEST/$tool.log
        if ! { "$PYTHON" -m venv "$venv" \
            && "$venv/bin/python" -m pip install --upgrade pip \
            && "$venv/bin/python" -m pip install "$requirement"; } >"$log" 2>&1; then
            tail -n 40 "$log" >&2
            echo "install-clients: FAILED to install $requirement (log: $log)" >&2
            failed+=("$tool")
            continue
        fi
        state="installed"
    fi
    for exe in $exes; do
        if ! works "$tool" "$exe"; then
            echo "install-clients: FAILED: $venv/bin/$exe --version does not run:" >&2
            "$venv/bin/$exe" --version >&2 || true
            failed+=("$tool")
            continue 2
        fi
        # Relative links, so the checkout can move.
        ln -sfn "../$tool/bin/$exe" "$BIN/$exe"
    done
    version=$("$venv/bin/python" -m pip show "${requirement%%[*}" 2>/dev/null \
        | sed -n 's/^Version: //p')
    summary+=("$(printf '%-7s %-10s %s -> %s' "$tool" "$version" "$state" "$BIN/${exes%% *}")")
done

# Debian's Chromium for the browser tests (tests/test_browser.py drives it with Playwright,
# which the test extras install without downloading a browser of its own).
if ! command -v chromium >/dev/null 2>&1; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "install-clients: installing Debian's chromium"
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
            >"$DEST/chromium.log" 2>&1; then
            tail -n 40 "$DEST/chromium.log" >&2
            failed+=("chromium")
        fi
    else
        echo "install-clients: chromium missing (apt-get install chromium); browser tests will skip" >&2
    fi
fi
command -v chromium >/dev/null 2>&1 && summary+=("$(chromium --version 2>/dev/null | head -n 1)")

# A real S3 server for the object-store tests (tests/test_s3.py): a single-node Ceph RADOS
# Gateway from Debian's own packages, started by the workplace's ceph-s3-up.sh on 127.0.0.1.
if ! command -v radosgw >/dev/null 2>&1; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "install-clients: installing Debian's ceph-mon, ceph-osd and radosgw"
        if ! { apt-get install -y -qq --no-install-recommends ceph-mon ceph-osd radosgw \
            || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                --no-install-recommends ceph-mon ceph-osd radosgw; }; } >"$DEST/ceph.log" 2>&1; then
            tail -n 40 "$DEST/ceph.log" >&2
            failed+=("radosgw")
        fi
    else
        echo "install-clients: radosgw missing (apt-get install ceph-mon ceph-osd radosgw); object-store tests will skip" >&2
    fi
fi
command -v radosgw >/dev/null 2>&1 && summary+=("$(radosgw --version 2>/dev/null | head -n 1)")

for line in "${summary[@]}"; do
    echo "install-clients: $line"
done
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "install-clients: failed: ${failed[*]}" >&2
    exit 1
fi
echo "install-clients: done in $(($(date +%s) - start))s; executables in $BIN"
