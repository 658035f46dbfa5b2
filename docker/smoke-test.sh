#!/usr/bin/env bash
# Build the pkgserver image and use it the way teams run pypiserver's: a packages folder and an
# htpasswd file mapped in, twine and pip on the host, files copied in with cp, restarts, a
# read-only volume, and the mistakes the entrypoint must explain.
#
#   bash docker/smoke-test.sh                       # docker or podman, whichever is present
#   ENGINE=podman BASE_IMAGE=localhost/debian-python:bookworm bash docker/smoke-test.sh
#
# Environment: ENGINE (docker|podman), BASE_IMAGE (passed to the build; default: the
# Dockerfile's), IMAGE (tag to build, default localhost/pkgserver:smoke), PYTHON (a Python with
# twine and pip, default python3), PORT (host port, default 8855), KEEP=1 keeps the work folder.
# Needs root (or rootless podman) to chown the test folder to the image's uid 9898.
# Exit status: 0 when every check passed; prints one "ok"/"FAIL" line per check with its figures.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
ENGINE=${ENGINE:-$(command -v docker >/dev/null && echo docker || echo podman)}
IMAGE=${IMAGE:-localhost/pkgserver:smoke}
PYTHON=${PYTHON:-python3}
PORT=${PORT:-8855}
PORT_RO=$((PORT + 1))
UID_IMAGE=9898
PASSWORD="s3cret-$RANDOM"
work=$(mktemp -d "${TMPDIR:-/tmp}/pkgserver-smoke.XXXXXX")
chmod 755 "$work"
name=pkgserver-smoke-$$
containers=()
failures=0

log() { printf '%s\n' "$*" >&2; }
ok() { printf 'ok - %s\n' "$*"; }
fail() { printf 'FAIL - %s\n' "$*"; failures=$((failures + 1)); }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

cleanup() {
  for c in "${containers[@]}"; do "$ENGINE" rm -f "$c" >/dev/null 2>&1 || true; done
  if [ "${KEEP:-}" = 1 ]; then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

as_image_user() {  # chown a host path to the image's user, as the README tells users to
  if [ "$(id -u)" = 0 ]; then chown "$@"; elif [ "$ENGINE" = podman ]; then podman unshare chown "$@"; else
    log "run as root (or with rootless podman) to chown test folders to uid $UID_IMAGE"; exit 2
  fi
}

http_status() {  # URL -> status code (000 when nothing answers)
  curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$1" || true
}

wait_health() {  # port, timeout -> seconds taken, or fails
  local start; start=$(now)
  for _ in $(seq $(($2 * 10))); do
    [ "$(http_status "http://127.0.0.1:$1/health")" = 200 ] && { since "$start"; return 0; }
    sleep 0.1
  done
  return 1
}

listed() {  # port project filename -> 0 when the simple API lists the file
  curl -s --max-time 5 -H 'Accept: application/vnd.pypi.simple.v1+json' \
    "http://127.0.0.1:$1/simple/$2/" | grep -q "\"filename\":\"$3\""
}

health_status() {  # container -> healthy | unhealthy | starting
  if [ "$ENGINE" = podman ]; then
    # podman runs scheduled health checks through systemd timers; run one now instead.
    if podman healthcheck run "$1" >/dev/null 2>&1; then echo healthy; else echo unhealthy; fi
  else
    docker inspect --format '{{.State.Health.Status}}' "$1"
  fi
}

wait_healthy() {  # container -> its health once it is no longer "starting" (docker: 2 min max)
  local status=starting
  for _ in $(seq 120); do
    status=$(health_status "$1"); [ "$status" = starting ] || break; sleep 1
  done
  echo "$status"
}

# -- build ------------------------------------------------------------------------------------------
build_args=(-f "$here/Dockerfile" -t "$IMAGE" --network=host)
[ -n "${BASE_IMAGE:-}" ] && build_args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
[ "$ENGINE" = podman ] && build_args+=(--format docker)  # OCI images drop HEALTHCHECK
start=$(now)
if "$ENGINE" build -q "${build_args[@]}" "$repo" >"$work/build.log" 2>&1; then
  ok "image built with $ENGINE in $(since "$start") s ($("$ENGINE" image inspect "$IMAGE" --format '{{.Size}}' | awk '{printf "%.0f MB", $1/1e6}'))"
else
  cat "$work/build.log" >&2; fail "image build"; exit 1
fi
user=$("$ENGINE" image inspect "$IMAGE" --format '{{.Config.User}}')
[ "$user" = "$UID_IMAGE:$UID_IMAGE" ] && ok "runs as $user, not root" || fail "image user is '$user'"
hc=$("$ENGINE" image inspect "$IMAGE" --format '{{json .Config.Healthcheck}}')
case "$hc" in *entrypoint.py*healthcheck*) ok "HEALTHCHECK set";; *) fail "no HEALTHCHECK: $hc";; esac

# -- a bucket: PKGSERVER_ROOTS=s3://..., found with the AWS_* variables --------------------------------
# No bucket here: a store that cannot be reached is said in one line, which shows that the image
# has the s3 extra (boto3) and that the AWS settings reach pkgserver.
set +e
out=$("$ENGINE" run --rm --no-healthcheck -e PKGSERVER_ROOTS=s3://smoke-bucket/packages \
  -e AWS_ENDPOINT_URL=http://127.0.0.1:9 -e AWS_ACCESS_KEY_ID=smoke -e AWS_SECRET_ACCESS_KEY=smoke \
  -e AWS_DEFAULT_REGION=us-east-1 -e AWS_MAX_ATTEMPTS=1 "$IMAGE" check 2>&1)
code=$?
set -e
if [ "$code" = 2 ] && [ "$(printf '%s\n' "$out" | grep -c .)" = 1 ] &&
    printf '%s' "$out" | grep -q 's3://smoke-bucket/packages: .* at http://127.0.0.1:9$'; then
  ok "a bucket in PKGSERVER_ROOTS is reached at AWS_ENDPOINT_URL (none there: exit 2, one line)"
else
  fail "check of a bucket in PKGSERVER_ROOTS: exit $code, output: $out"
fi

# -- the folder and the password file, as a user sets them up -----------------------------------------
pypi="$work/pypi"
mkdir -p "$pypi/packages" "$work/dist" "$work/home"
# As the README says: the folder stays the user's, group 9898 (the server) may write, and files
# created in it get group 9898 (setgid), so both sides can add files without sudo.
as_image_user ":$UID_IMAGE" "$pypi/packages"
chmod 2775 "$pypi/packages"
# The image's own passwd command, run as the host user so the file is theirs.
if printf '%s\n' "$PASSWORD" | "$ENGINE" run --rm -i --user "$(id -u):$(id -g)" -v "$pypi:/data" \
    "$IMAGE" passwd .htpasswd alice >"$work/passwd.log" 2>&1 && grep -q '^alice:\$2' "$pypi/.htpasswd"; then
  ok "htpasswd created with '$ENGINE run IMAGE passwd .htpasswd alice' (bcrypt)"
else
  cat "$work/passwd.log" >&2; fail "creating the htpasswd file"
fi

"$PYTHON" - "$repo/tests" "$work/dist" <<'PY'
import sys
sys.path.insert(0, sys.argv[1])
from builders import make_wheel
for name, version in [("smoke-demo", "1.0"), ("smoke-copied", "2.0"), ("smoke-pw", "1.0")]:
    make_wheel(sys.argv[2], name, version, summary="pkgserver smoke test")
PY

# -- the command from pypiserver's documentation, with our image -------------------------------------
containers+=("$name")
start=$(now)
"$ENGINE" run -d --name "$name" -p "$PORT:8080" -v "$pypi/packages:/data/packages" \
  -v "$pypi/.htpasswd:/data/.htpasswd" --restart=always "$IMAGE" -v -P .htpasswd packages >/dev/null
if t=$(wait_health "$PORT" 60); then ok "/health answers 200, $t s after docker run"; else
  "$ENGINE" logs "$name" >&2; fail "/health never answered"; exit 1
fi
status=$(wait_healthy "$name")
[ "$status" = healthy ] && ok "HEALTHCHECK reports healthy" || fail "HEALTHCHECK reports $status"

cat >"$work/home/.pypirc" <<EOF
[distutils]
index-servers = corp

[corp]
repository = http://127.0.0.1:$PORT/
username = alice
password = $PASSWORD
EOF
start=$(now)
if HOME="$work/home" "$PYTHON" -m twine upload --disable-progress-bar -r corp \
    "$work/dist/smoke_demo-1.0-py3-none-any.whl" >"$work/twine.log" 2>&1; then
  owner=$(stat -c %u:%g "$pypi/packages/smoke_demo-1.0-py3-none-any.whl" 2>/dev/null || echo missing)
  if [ "$owner" = "$UID_IMAGE:$UID_IMAGE" ] && cmp -s "$work/dist/smoke_demo-1.0-py3-none-any.whl" \
      "$pypi/packages/smoke_demo-1.0-py3-none-any.whl"; then
    ok "twine upload -r corp stored the file in the host folder, owned by $owner ($(since "$start") s)"
  else
    fail "uploaded file on the host: owner $owner, or its bytes differ"
  fi
else
  cat "$work/twine.log" >&2; fail "twine upload -r corp"
fi
if HOME="$work/home" "$PYTHON" -m twine upload --disable-progress-bar --repository-url \
    "http://127.0.0.1:$PORT/" -u alice -p wrong "$work/dist/smoke_copied-2.0-py3-none-any.whl" \
    >"$work/twine-bad.log" 2>&1; then
  fail "an upload with a wrong password was accepted"
elif grep -q 403 "$work/twine-bad.log" && [ ! -e "$pypi/packages/smoke_copied-2.0-py3-none-any.whl" ]; then
  ok "a wrong password is refused (403) and nothing is stored"
else
  cat "$work/twine-bad.log" >&2; fail "wrong password: unexpected answer"
fi

# pkgserver passwd on the host rewrites the file in place, so the single-file bind mount sees it.
new_password="changed-$RANDOM"
printf '%s\n' "$new_password" | "$PYTHON" -m pkgserver passwd "$pypi/.htpasswd" alice 2>/dev/null
code=000
start=$(now)
for _ in $(seq 50); do
  code=$(curl -s -o /dev/null -w '%{http_code}' -u "alice:$new_password" \
    -F ':action=file_upload' -F name=smoke-pw -F version=1.0 \
    -F "content=@$work/dist/smoke_pw-1.0-py3-none-any.whl" "http://127.0.0.1:$PORT/")
  [ "$code" = 200 ] && break; sleep 0.1
done
old_code=$(curl -s -o /dev/null -w '%{http_code}' -u "alice:$PASSWORD" \
  -F ':action=file_upload' -F name=smoke-pw -F version=1.0 \
  -F "content=@$work/dist/smoke_pw-1.0-py3-none-any.whl" "http://127.0.0.1:$PORT/")
if [ "$code" = 200 ] && [ "$old_code" = 403 ]; then
  ok "a password changed on the host with pkgserver passwd works after $(since "$start") s; the old one gets 403"
else
  fail "password change through the mounted htpasswd: new password $code, old one $old_code"
fi
PASSWORD=$new_password

pip_install() {  # port project target-dir
  PIP_CONFIG_FILE=/dev/null HOME="$work/home" "$PYTHON" -m pip install -q --no-cache-dir \
    --disable-pip-version-check --no-deps --target "$3" --index-url "http://127.0.0.1:$1/simple/" "$2"
}
if pip_install "$PORT" smoke-demo "$work/site" >"$work/pip.log" 2>&1 && \
    [ -d "$work/site/smoke_demo-1.0.dist-info" ]; then
  ok "pip install smoke-demo from the container installs 1.0"
else
  cat "$work/pip.log" >&2; fail "pip install from the container"
fi

start=$(now)
cp "$work/dist/smoke_copied-2.0-py3-none-any.whl" "$pypi/packages/"
took=""
for _ in $(seq 300); do
  if listed "$PORT" smoke-copied smoke_copied-2.0-py3-none-any.whl; then took=$(since "$start"); break; fi
  sleep 0.02
done
if [ -n "$took" ] && awk -v t="$took" 'BEGIN { exit !(t < 1.0) }'; then
  ok "a wheel copied into the host folder is listed after $took s"
else
  fail "copied wheel listed after ${took:-more than 6} s (want < 1 s)"
fi

# -- restart ------------------------------------------------------------------------------------------
"$ENGINE" restart "$name" >/dev/null
both() {
  listed "$PORT" smoke-demo smoke_demo-1.0-py3-none-any.whl &&
    listed "$PORT" smoke-copied smoke_copied-2.0-py3-none-any.whl
}
if t=$(wait_health "$PORT" 60); then
  # A file modified within the last second is listed once it has settled (it may still be
  # being written), so the one copied just before the restart can take a moment.
  for _ in $(seq 50); do both && break; sleep 0.1; done
  both && ok "after a restart ($t s to healthy) both files are listed" || fail "restart lost a file"
else
  "$ENGINE" logs "$name" >&2; fail "no /health after the restart"
fi
got=$(curl -s "http://127.0.0.1:$PORT/packages/smoke_demo-1.0-py3-none-any.whl" | sha256sum | cut -d' ' -f1)
want=$(sha256sum "$work/dist/smoke_demo-1.0-py3-none-any.whl" | cut -d' ' -f1)
[ "$got" = "$want" ] && ok "downloads are byte-identical after the restart" || fail "download differs"

# -- a read-only volume, configured by environment variables ------------------------------------------
ro=$name-ro
containers+=("$ro")
before=$(ls -la --time-style=+%s "$pypi/packages" | sha256sum)
"$ENGINE" run -d --name "$ro" -p "$PORT_RO:9090" -e PKGSERVER_PORT=9090 \
  -e PKGSERVER_PASSWORDS=.htpasswd -e PKGSERVER_DISABLE_FALLBACK=1 \
  -v "$pypi/packages:/data/packages:ro" -v "$pypi/.htpasswd:/data/.htpasswd:ro" "$IMAGE" >/dev/null
if wait_health "$PORT_RO" 60 >/dev/null; then
  ok "read-only volume: the server starts (port 9090 from PKGSERVER_PORT)"
else
  "$ENGINE" logs "$ro" >&2; fail "read-only volume: no start"
fi
# (podman's log can lag the process by a moment: look a few times)
said=""
for _ in 1 2 3 4 5 6 7 8 9 10; do
  if "$ENGINE" logs "$ro" 2>&1 | grep -q "mounted read-only"; then said=1; break; fi
  sleep 0.5
done
[ -n "$said" ] && ok "it says the volume is read-only" || fail "no read-only notice in the log"
status=$(wait_healthy "$ro")
[ "$status" = healthy ] && ok "HEALTHCHECK finds the server on port 9090 (healthy)" \
  || fail "HEALTHCHECK with PKGSERVER_PORT=9090: $status"
if HOME="$work/home" "$PYTHON" -m twine upload --disable-progress-bar --repository-url \
    "http://127.0.0.1:$PORT_RO/" -u alice -p "$PASSWORD" "$work/dist/smoke_copied-2.0-py3-none-any.whl" \
    >"$work/twine-ro.log" 2>&1; then
  fail "an upload into a read-only volume succeeded"
else
  code=$(curl -s -o "$work/ro-answer" -w '%{http_code}' -u "alice:$PASSWORD" \
    -F ':action=file_upload' -F name=smoke-ro -F version=1.0 \
    -F "content=@$work/dist/smoke_demo-1.0-py3-none-any.whl;filename=smoke_ro-1.0-py3-none-any.whl" \
    "http://127.0.0.1:$PORT_RO/")
  if [ "$code" = 403 ] && grep -q "read-only" "$work/ro-answer"; then
    ok "upload into the read-only volume: 403 '$(head -c 80 "$work/ro-answer" | tr -d '\n')'"
  else
    fail "upload into the read-only volume answered $code: $(head -c 200 "$work/ro-answer")"
  fi
fi
if pip_install "$PORT_RO" smoke-demo "$work/site-ro" >"$work/pip-ro.log" 2>&1; then
  ok "downloads still work from the read-only volume"
else
  cat "$work/pip-ro.log" >&2; fail "pip install from the read-only volume"
fi
after=$(ls -la --time-style=+%s "$pypi/packages" | sha256sum)
[ "$before" = "$after" ] && ok "the read-only folder is unchanged" || fail "the read-only folder changed"

# -- pypiserver's image variables: PYPISERVER_PORT ------------------------------------------------------
ps=$name-pypiserver-port
containers+=("$ps")
PORT_PS=$((PORT + 4))
"$ENGINE" run -d --name "$ps" -p "$PORT_PS:9191" -e PYPISERVER_PORT=9191 \
  -v "$pypi/packages:/data/packages:ro" "$IMAGE" >/dev/null
if wait_health "$PORT_PS" 60 >/dev/null; then
  status=$(wait_healthy "$ps")
  [ "$status" = healthy ] && ok "PYPISERVER_PORT=9191 (pypiserver's variable): listens there, HEALTHCHECK healthy" \
    || fail "PYPISERVER_PORT=9191: HEALTHCHECK says $status"
else
  "$ENGINE" logs "$ps" >&2; fail "PYPISERVER_PORT=9191: no answer on 9191"
fi
"$ENGINE" rm -f "$ps" >/dev/null 2>&1 || true

# -- mistakes the entrypoint explains without starting --------------------------------------------------
refuses_in_one_line() {  # what, expected text, volume, args... -> ok if exit 2 and one matching line
  local what=$1 want=$2 volume=$3 out code lines
  shift 3
  set +e
  out=$("$ENGINE" run --rm --no-healthcheck -v "$volume:/data/packages" "$IMAGE" "$@" 2>&1)
  code=$?
  set -e
  lines=$(printf '%s\n' "$out" | grep -c . || true)
  if [ "$code" = 2 ] && [ "$lines" = 1 ] && printf '%s' "$out" | grep -q "$want"; then
    ok "$what: exit 2, one line: $(printf '%s' "$out" | cut -c1-110)..."
  else
    fail "$what: exit $code, output: $out"
  fi
}
mkdir -p "$work/rootowned"  # owned by whoever runs this, not by uid 9898: not writable for it
chmod 755 "$work/rootowned"
refuses_in_one_line "unwritable volume" "not writable" "$work/rootowned" -P . -a . packages
[ "$(stat -c %u "$work/rootowned")" = "$(id -u)" ] && [ -z "$(ls -A "$work/rootowned")" ] \
  && ok "and the volume was not chown'ed or written" || fail "the unwritable volume was changed"
refuses_in_one_line "missing htpasswd" "password file" "$pypi/packages" -P .htpasswd packages

# -- behind nginx with a path prefix, using docker/nginx.conf ----------------------------------------
if command -v nginx >/dev/null; then
  PORT_BEHIND=$((PORT + 2))
  PORT_PROXY=$((PORT + 3))
  prefix="http://127.0.0.1:$PORT_PROXY/pypi"
  behind=$name-behind
  containers+=("$behind")
  mkdir -p "$work/proxied/packages" "$work/nginx/logs"
  as_image_user "$UID_IMAGE:$UID_IMAGE" "$work/proxied/packages"
  cp "$work/dist/smoke_copied-2.0-py3-none-any.whl" "$work/proxied/packages/"
  "$ENGINE" run -d --name "$behind" -p "$PORT_BEHIND:8080" \
    -v "$work/proxied/packages:/data/packages" -v "$pypi/.htpasswd:/data/.htpasswd:ro" "$IMAGE" \
    -P .htpasswd --server-base-url "$prefix/" packages >/dev/null
  # The shipped site config, pointed at this host's ports instead of compose's service names.
  sed -e "s|listen 80;|listen 127.0.0.1:$PORT_PROXY;|" \
    -e "s|http://pkgserver-behind-proxy:8080/|http://127.0.0.1:$PORT_BEHIND/|" \
    "$here/nginx.conf" >"$work/nginx/site.conf"
  printf '%s\n' "daemon off;" "pid $work/nginx/nginx.pid;" "error_log $work/nginx/logs/error.log;" \
    "events {}" "http {" "  access_log off;" "  client_body_temp_path $work/nginx/body;" \
    "  proxy_temp_path $work/nginx/proxy;" "  include $work/nginx/site.conf;" "}" \
    >"$work/nginx/nginx.conf"
  nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" &
  nginx_pid=$!
  wait_health "$PORT_BEHIND" 60 >/dev/null || fail "the proxied container did not start"
  for _ in $(seq 50); do [ "$(http_status "$prefix/health")" = 200 ] && break; sleep 0.1; done
  # Copied in just before the start: listed once a second old (it might still be being written).
  for _ in $(seq 50); do
    listed "$PORT_BEHIND" smoke-copied smoke_copied-2.0-py3-none-any.whl && break; sleep 0.1
  done
  location=$(curl -s -o /dev/null -w '%{redirect_url}' "$prefix")
  if [ "$location" = "$prefix/" ]; then
    ok "behind nginx: $prefix redirects to $location (the port clients use)"
  else
    fail "behind nginx: $prefix redirects to '$location'"
  fi
  location=$(curl -s -o /dev/null -w '%{redirect_url}' "$prefix/simple/Smoke_Copied/")
  if [ "$location" = "$prefix/simple/smoke-copied/" ]; then
    ok "behind nginx: a redirect stays under the prefix ($location)"
  else
    fail "behind nginx: redirect to '$location'"
  fi
  json_url=$(curl -s "$prefix/pypi/smoke-copied/json" |
    "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["urls"][0]["url"])' || true)
  case "$json_url" in
    "$prefix/packages/"*) ok "behind nginx: /pypi/<p>/json links under the prefix";;
    *) fail "behind nginx: the JSON API links to '$json_url'";;
  esac
  if pip_install "$PORT_PROXY/pypi" smoke-copied "$work/site-proxy" >"$work/pip-proxy.log" 2>&1 \
      && [ -d "$work/site-proxy/smoke_copied-2.0.dist-info" ]; then
    ok "behind nginx: pip install --index-url $prefix/simple/ works"
  else
    cat "$work/pip-proxy.log" >&2; fail "behind nginx: pip install"
  fi
  wheel=smoke_demo-1.0-py3-none-any.whl
  if HOME="$work/home" "$PYTHON" -m twine upload --disable-progress-bar --repository-url "$prefix/" \
      -u alice -p "$PASSWORD" "$work/dist/$wheel" >"$work/twine-proxy.log" 2>&1 \
      && cmp -s "$work/dist/$wheel" "$work/proxied/packages/$wheel"; then
    ok "behind nginx: twine upload to $prefix/ stores the file"
  else
    cat "$work/twine-proxy.log" >&2; fail "behind nginx: twine upload"
  fi
  kill "$nginx_pid" 2>/dev/null || true
  wait "$nginx_pid" 2>/dev/null || true
else
  log "skipped the reverse-proxy checks: no nginx on this machine (apt-get install nginx-light)"
fi

# -- docker stop with an upload being written: within the grace time and past it -------------------
big=smoke_big-1.0-py3-none-any.whl
"$PYTHON" - "$work/dist/$big" <<'PY'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_STORED) as zf:
    di = "smoke_big-1.0.dist-info"
    zf.writestr(f"{di}/METADATA", "Metadata-Version: 2.1\nName: smoke-big\nVersion: 1.0\n")
    zf.writestr(f"{di}/WHEEL", "Wheel-Version: 1.0\nGenerator: smoke\nRoot-Is-Purelib: true\n"
                "Tag: py3-none-any\n")
    with zf.open("smoke_big/blob.bin", "w", force_zip64=True) as member:
        for _ in range(40):
            member.write(os.urandom(8 * 1024 * 1024))
PY
stop_during_upload() {  # grace-seconds port -> one ok/FAIL line
  local grace=$1 port=$2 c="$name-stop$1" folder="$work/stop$1"
  mkdir -p "$folder"
  as_image_user ":$UID_IMAGE" "$folder"
  chmod 2775 "$folder"
  containers+=("$c")
  "$ENGINE" run -d --name "$c" -p "$port:8080" -e "PKGSERVER_SHUTDOWN_TIMEOUT=$grace" \
    -v "$folder:/data/packages" -v "$pypi/.htpasswd:/data/.htpasswd:ro" "$IMAGE" \
    -P .htpasswd packages >/dev/null
  wait_health "$port" 60 >/dev/null || { fail "grace $grace: no start"; return; }
  curl -s -o "$work/stop$grace.answer" -w '%{http_code}' -u "alice:$PASSWORD" \
    -F ':action=file_upload' -F name=smoke-big -F version=1.0 \
    -F "content=@$work/dist/$big" "http://127.0.0.1:$port/" >"$work/stop$grace.code" &
  local curl_pid=$! writing=no
  for _ in $(seq 1000); do
    if [ -n "$(find "$folder" -name '.pkgserver-tmp-*')" ]; then writing=yes; break; fi
    sleep 0.01
  done
  local start; start=$(now)
  "$ENGINE" stop -t 60 "$c" >/dev/null
  local took; took=$(since "$start")
  wait "$curl_pid" 2>/dev/null || true
  local code; code=$(cat "$work/stop$grace.code")
  local exit_code; exit_code=$("$ENGINE" inspect --format '{{.State.ExitCode}}' "$c")
  local outcome=absent
  if [ -e "$folder/$big" ]; then
    if cmp -s "$work/dist/$big" "$folder/$big"; then outcome=whole; else outcome=PARTIAL; fi
  fi
  local temps; temps=$(find "$folder" -name '.pkgserver-tmp-*' | wc -l)
  local logged; logged=$("$ENGINE" logs "$c" 2>&1 | grep -c "shutting down" || true)
  local want_outcome=whole want_code=200
  if [ "$grace" = 0 ]; then want_outcome=absent; want_code=not200; fi
  if [ "$writing" = yes ] && [ "$exit_code" = 0 ] && [ "$logged" = 1 ] && [ "$temps" = 0 ] \
      && [ "$outcome" = "$want_outcome" ] \
      && { [ "$want_code" = "$code" ] || { [ "$want_code" = not200 ] && [ "$code" != 200 ]; }; }; then
    ok "docker stop during a 320 MB upload, --shutdown-timeout $grace: exit 0 after $took s, file $outcome, client got HTTP $code, no temp file"
  else
    fail "docker stop, grace $grace: writing=$writing exit=$exit_code logged=$logged temps=$temps file=$outcome HTTP $code after $took s"
  fi
}
stop_during_upload 30 $((PORT + 4))
stop_during_upload 0 $((PORT + 5))

if [ "$failures" = 0 ]; then log "smoke test passed"; else log "smoke test: $failures check(s) failed"; fi
[ "$failures" = 0 ]
