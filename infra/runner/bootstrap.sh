#!/bin/bash
# pacer runner bootstrap: turns a fresh instance into one ephemeral GitHub
# Actions runner, then powers it off (the launch template makes an
# instance-initiated shutdown terminate the instance).
#
# pacer renders this script into the instance's user data behind a header
# that sets PACER_URL (pacer's callback base URL) and PACER_TOKEN (this
# runner's callback token); cloud-init runs it once, as root, at first boot.
#
#   1. POST $PACER_URL/api/runner/register   (retried: the network may not
#      be up yet) -> encoded_jit_config, runner_name, runner_version,
#      download_url, sha256
#   2. use $PACER_RUNNER_DIR if it holds run.sh (an AMI that ships the
#      runner), else download download_url, check it against sha256, and
#      unpack it there; a missing or mismatching checksum stops the boot
#   3. run ./run.sh --jitconfig ... as $PACER_RUNNER_USER (the runner
#      refuses root)
#   4. POST $PACER_URL/api/runner/complete, or on any failure
#      POST $PACER_URL/api/runner/error {"log_tail": last 4 KB of the log}
#   5. $PACER_POWEROFF_CMD
#
# Trust: a downloaded runner must match the SHA-256 pacer names (from GitHub's
# release metadata, or the operator's runner.sha256), so a tampered tarball or
# mirror never runs. A runner baked into the AMI is not checked: there is no
# archive left to check, and it is trusted as the AMI itself is, which runs
# this very script as root.
#
# Secrets: the token and the JIT config are never echoed, never written to
# the log, and never put on a command line except the one the runner itself
# needs (--jitconfig); the token reaches curl through a header file in a
# private (0700) directory. The log tail sent to pacer is redacted once more
# before it leaves, in case a tool printed either.
#
# JSON: python3 reads and writes it. It is always there: cloud-init, which
# runs user data, is itself a Python 3 program. (jq is not on every AMI, and
# sed cannot parse JSON.) Requires bash, curl, python3, sha256sum, tar, and
# runuser or the same user already.
#
# Overridable from the environment (defaults for a real instance):
#   PACER_RUNNER_DIR       /opt/actions-runner
#   PACER_RUNNER_USER      runner (created if missing)
#   PACER_LOG              /var/log/pacer-bootstrap.log
#   PACER_POWEROFF_CMD     shutdown -h now
#   PACER_REGISTER_TRIES   20 (about 8 minutes)   PACER_RETRY_DELAY  2 (seconds, doubling to 30)
#   PACER_CURL_TIMEOUT     30 (seconds per request)

set -uo pipefail

: "${PACER_URL:?PACER_URL is not set (pacer renders it into the user data)}"
: "${PACER_TOKEN:?PACER_TOKEN is not set (pacer renders it into the user data)}"

RUNNER_DIR="${PACER_RUNNER_DIR:-/opt/actions-runner}"
RUNNER_USER="${PACER_RUNNER_USER:-runner}"
LOG="${PACER_LOG:-/var/log/pacer-bootstrap.log}"
POWEROFF_CMD="${PACER_POWEROFF_CMD:-shutdown -h now}"
REGISTER_TRIES="${PACER_REGISTER_TRIES:-20}"
RETRY_DELAY="${PACER_RETRY_DELAY:-2}"
CURL_TIMEOUT="${PACER_CURL_TIMEOUT:-30}"
PACER_URL="${PACER_URL%/}"

JIT=""
WORK=""

log() {
    # Progress goes to the log (whose tail pacer stores) and to stderr
    # (which cloud-init keeps in its own output log).
    printf '%s pacer-bootstrap: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" | tee -a "$LOG" >&2
}

fail() {
    log "FAILED: $*"
    return 1
}

cleanup() {
    if [ -n "$WORK" ]; then
        rm -rf "$WORK"
    fi
}

# post PATH BODY_FILE OUT_FILE -> prints the HTTP status (000: no answer).
# The bearer token is read by curl from a header file, never from argv.
post() {
    local path="$1" body="$2" out="$3" status
    status="$(curl --silent --show-error --max-time "$CURL_TIMEOUT" \
        --request POST --header @"$WORK/auth.header" \
        --header 'Content-Type: application/json' --data-binary @"$body" \
        --output "$out" --write-out '%{http_code}' \
        "$PACER_URL$path" 2>>"$LOG")"
    printf '%s' "${status:-000}"
}

# json_field FILE KEY -> prints the string value of a top-level key.
json_field() {
    python3 -c '
import json, sys
value = json.load(open(sys.argv[1])).get(sys.argv[2])
if not isinstance(value, str) or not value:
    sys.exit(1)
sys.stdout.write(value)
' "$1" "$2"
}

runner_arch() {
    case "$(uname -m)" in
        x86_64 | amd64) echo x64 ;;
        aarch64 | arm64) echo arm64 ;;
        *) return 1 ;;
    esac
}

register() {
    local arch attempt=1 delay="$RETRY_DELAY" status reason response="$WORK/register.json"
    arch="$(runner_arch)" || { fail "unsupported machine architecture $(uname -m)"; return 1; }
    printf '{"os":"linux","arch":"%s"}' "$arch" >"$WORK/register-body.json"
    while :; do
        status="$(post /api/runner/register "$WORK/register-body.json" "$response")"
        case "$status" in
            2??) break ;;
            000 | 429 | 5??) log "register: attempt $attempt of $REGISTER_TRIES got HTTP $status" ;;
            *)
                # pacer's reason, e.g. that it knows no checksum for the download.
                reason="$(json_field "$response" message 2>/dev/null)" || reason="no reason given"
                fail "register: pacer refused with HTTP $status: $reason"
                return 1
                ;;
        esac
        if [ "$attempt" -ge "$REGISTER_TRIES" ]; then
            fail "register: gave up after $attempt attempts"
            return 1
        fi
        sleep "$delay"
        attempt=$((attempt + 1))
        delay=$((delay * 2 > 30 ? 30 : delay * 2))
    done

    JIT="$(json_field "$response" encoded_jit_config)" || { fail "register: the answer has no encoded_jit_config"; return 1; }
    RUNNER_NAME="$(json_field "$response" runner_name)" || RUNNER_NAME="?"
    RUNNER_VERSION="$(json_field "$response" runner_version)" || RUNNER_VERSION="?"
    DOWNLOAD_URL="$(json_field "$response" download_url)" || DOWNLOAD_URL=""
    RUNNER_SHA256="$(json_field "$response" sha256)" || RUNNER_SHA256=""
    rm -f "$response"
    log "registered as runner $RUNNER_NAME (actions/runner $RUNNER_VERSION)"
}

ensure_user() {
    if [ "$RUNNER_USER" = root ] || [ "$(id -u "$RUNNER_USER" 2>/dev/null)" = 0 ]; then
        fail "the runner refuses to run as root: set PACER_RUNNER_USER to an unprivileged user"
        return 1
    fi
    if [ "$(id -un)" = "$RUNNER_USER" ]; then
        return 0
    fi
    if [ "$(id -u)" -ne 0 ]; then
        fail "running as $(id -un), not root: cannot switch to $RUNNER_USER"
        return 1
    fi
    if ! id -u "$RUNNER_USER" >/dev/null 2>&1; then
        log "creating user $RUNNER_USER"
        useradd --create-home --shell /bin/bash "$RUNNER_USER" >>"$LOG" 2>&1 \
            || { fail "cannot create user $RUNNER_USER"; return 1; }
    fi
}

# verify_download FILE: refuses (and deletes) a file whose SHA-256 is not
# the one pacer named.
verify_download() {
    local actual expected="${RUNNER_SHA256,,}"
    actual="$(sha256sum "$1" | cut -d ' ' -f 1)" || { fail "cannot compute the SHA-256 of the runner download"; return 1; }
    if [ "$actual" != "$expected" ]; then
        rm -f "$1"
        fail "the runner download's SHA-256 does not match the release's: expected $expected, got $actual; refusing to unpack it"
        return 1
    fi
    log "the runner download matches SHA-256 $expected"
}

install_runner() {
    if [ -x "$RUNNER_DIR/run.sh" ]; then
        log "using the runner baked into the AMI in $RUNNER_DIR (no download to verify)"
    else
        [ -n "$DOWNLOAD_URL" ] || { fail "no runner in $RUNNER_DIR and no download_url"; return 1; }
        [[ "$RUNNER_SHA256" =~ ^[0-9a-fA-F]{64}$ ]] \
            || { fail "pacer named no SHA-256 for the runner download; refusing a runner that cannot be verified"; return 1; }
        log "downloading the runner from $DOWNLOAD_URL"
        curl --silent --show-error --fail --location --retry 5 --max-time 600 \
            --output "$WORK/runner.tar.gz" "$DOWNLOAD_URL" 2>>"$LOG" \
            || { fail "downloading the runner failed"; return 1; }
        verify_download "$WORK/runner.tar.gz" || return 1
        log "unpacking the runner into $RUNNER_DIR"
        mkdir -p "$RUNNER_DIR" || { fail "cannot create $RUNNER_DIR"; return 1; }
        tar -xzf "$WORK/runner.tar.gz" -C "$RUNNER_DIR" >>"$LOG" 2>&1 \
            || { fail "unpacking the runner failed"; return 1; }
        rm -f "$WORK/runner.tar.gz"
        [ -x "$RUNNER_DIR/run.sh" ] || { fail "the runner archive has no run.sh"; return 1; }
        if [ "$(id -u)" -eq 0 ] && [ -x "$RUNNER_DIR/bin/installdependencies.sh" ]; then
            # The runner needs libicu and friends; a failure here shows up
            # again, with a clearer message, when run.sh starts.
            "$RUNNER_DIR/bin/installdependencies.sh" >>"$LOG" 2>&1 || log "installdependencies.sh failed"
        fi
    fi
    if [ "$(id -un)" != "$RUNNER_USER" ]; then
        # The runner writes its _diag and _work folders here.
        chown -R "$RUNNER_USER:" "$RUNNER_DIR" || { fail "cannot hand $RUNNER_DIR to $RUNNER_USER"; return 1; }
    fi
}

run_runner() {
    local status
    log "starting the runner as $RUNNER_USER"
    cd "$RUNNER_DIR" || { fail "cannot enter $RUNNER_DIR"; return 1; }
    if [ "$(id -un)" = "$RUNNER_USER" ]; then
        ./run.sh --jitconfig "$JIT" >>"$LOG" 2>&1
    else
        runuser -u "$RUNNER_USER" -- ./run.sh --jitconfig "$JIT" >>"$LOG" 2>&1
    fi
    status=$?
    cd / || true
    [ "$status" -eq 0 ] || { fail "run.sh exited with status $status"; return 1; }
    log "the runner finished"
}

main() {
    WORK="$(mktemp -d)" || { fail "cannot create a private work directory"; return 1; }
    printf 'Authorization: Bearer %s\n' "$PACER_TOKEN" >"$WORK/auth.header"
    printf '{}' >"$WORK/empty.json"
    register || return 1
    ensure_user || return 1
    install_runner || return 1
    run_runner || return 1
}

report_complete() {
    local try status
    for try in 1 2 3 4 5; do
        status="$(post /api/runner/complete "$WORK/empty.json" /dev/null)"
        case "$status" in 2??) log "reported completion"; return 0 ;; esac
        log "complete: attempt $try got HTTP $status"
        sleep "$RETRY_DELAY"
    done
    return 1
}

# Sends the log's last 4 KB, with the token and JIT config redacted in case
# anything printed them.
report_error() {
    local try status
    if [ -z "$WORK" ] || [ ! -f "$WORK/auth.header" ]; then
        return 1
    fi
    tail -c 4096 "$LOG" 2>/dev/null | PACER_REDACT_1="$PACER_TOKEN" PACER_REDACT_2="$JIT" python3 -c '
import json, os, sys
tail = sys.stdin.buffer.read().decode("utf-8", "replace")
for key in ("PACER_REDACT_1", "PACER_REDACT_2"):
    secret = os.environ.get(key, "")
    if secret:
        tail = tail.replace(secret, "[redacted]")
sys.stdout.write(json.dumps({"log_tail": tail}))
' >"$WORK/error.json" || printf '{"log_tail":"bootstrap failed; python3 could not read the log"}' >"$WORK/error.json"
    for try in 1 2 3 4 5; do
        status="$(post /api/runner/error "$WORK/error.json" /dev/null)"
        case "$status" in 2??) return 0 ;; esac
        log "error report: attempt $try got HTTP $status"
        sleep "$RETRY_DELAY"
    done
    return 1
}

mkdir -p "$(dirname "$LOG")" && touch "$LOG" || LOG=/dev/null
trap cleanup EXIT
log "bootstrapping against $PACER_URL"
if main; then
    report_complete || log "could not report completion; pacer's reaper will notice the instance is gone"
else
    report_error || log "could not report the failure"
fi
JIT=""
log "powering off"
cleanup
WORK=""
bash -c "$POWEROFF_CMD"
