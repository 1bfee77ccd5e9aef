#!/bin/bash
# pacer-runner: serves GitHub Actions jobs on this machine with pacer's
# self-service just-in-time runners, one job per runner, in a loop.
#
# Usage: pacer-runner.sh [--help]
#
# Each round:
#   1. gets a fresh workload OIDC token (every request to pacer needs its
#      own: pacer uses a token's jti once), from PACER_TOKEN_COMMAND or,
#      inside a GitHub Actions job, from GitHub's ID token endpoint
#   2. POST $PACER_URL/api/v1/runners/provision with a new runner name and
#      PACER_LABELS; a refusal (4xx) prints pacer's message and stops the
#      script; no answer, 429 and 5xx are retried with backoff, each time
#      with a fresh token and a new name
#   3. runs the actions/runner in PACER_RUNNER_DIR with the just-in-time
#      configuration pacer returned, and waits for its one job
#   4. DELETE $PACER_URL/api/v1/runners/<name>: the configuration is spent,
#      and the runner no longer counts against the identity's live-runner
#      limit (GitHub has usually removed it already; pacer then just
#      records it)
# With PACER_ONCE=1 it serves one job and exits with the runner's status.
#
# Before the first round the runner is installed if PACER_RUNNER_DIR holds
# no executable run.sh: the actions/runner release for this OS and
# architecture is downloaded, checked against PACER_RUNNER_SHA256 when
# given, and unpacked there.
#
# Stopping: SIGINT (Ctrl-C) or SIGTERM stops the script cleanly. A running
# runner is sent SIGTERM and waited for (a second signal kills it); a
# request in flight is let finish; a runner provisioned but not yet started
# is deleted from pacer (with a fresh token), so nothing is left behind.
#
# Exit status: 0 when PACER_ONCE=1 and the runner succeeded (otherwise the
# runner's own status); 1 when pacer refused, a request kept failing, the
# token source failed, the runner could not be installed, or it failed
# PACER_TRIES times in a row; 2 for a usage or settings error; 130 after
# SIGINT, 143 after SIGTERM.
#
# Variables (the environment):
#   PACER_URL               pacer's base URL, e.g. https://pacer.example.com (required)
#   PACER_TOKEN_COMMAND     a command run (by bash) for every request; its
#                           stdout is the token. Wins over the Actions endpoint.
#   ACTIONS_ID_TOKEN_REQUEST_URL, ACTIONS_ID_TOKEN_REQUEST_TOKEN
#                           set by GitHub Actions in a job with
#                           `permissions: id-token: write`; used when
#                           PACER_TOKEN_COMMAND is not set
#   PACER_AUDIENCE          the audience asked of GitHub's endpoint: the one
#                           pacer's trusted identity expects (required with it)
#   PACER_RUNNER_NAME       the base of each runner's name (default: this host's
#                           name, other characters than A-Z a-z 0-9 . _ - made
#                           '-'), at most 48 of those characters. Each runner is
#                           named <base>-<random>-<n>: pacer never reuses a name.
#                           pacer puts the identity's name_prefix before it.
#   PACER_LABELS            comma-separated labels to ask for, e.g. gpu,cuda-12
#                           (default: none; pacer adds its required ones)
#   PACER_RUNNER_DIR        the actions/runner install (default: $HOME/actions-runner)
#   PACER_RUNNER_DOWNLOAD   1 (default): install the runner when missing;
#                           0: never download, fail instead
#   PACER_RUNNER_VERSION    the runner release to download, e.g. 2.330.0
#                           (default: the latest, asked of api.github.com)
#   PACER_RUNNER_URL        download this tarball instead (a mirror)
#   PACER_RUNNER_SHA256     the tarball's SHA-256; a mismatch stops the script.
#                           Without it the download is trusted as TLS delivers it.
#   PACER_JITCONFIG_VIA     env (default): the configuration reaches the runner in
#                           its environment, ACTIONS_RUNNER_INPUT_JITCONFIG, which
#                           the runner reads and removes; argv: as
#                           `./run.sh --jitconfig <config>` (see Secrets)
#   PACER_ONCE              1: serve one job, then exit (default: 0, loop)
#   PACER_TRIES             attempts per request, and consecutive runner
#                           failures before giving up (default: 5)
#   PACER_RETRY_DELAY       first backoff in seconds, doubling to 60 (default: 2)
#   PACER_CURL_TIMEOUT      seconds per request to pacer (default: 30)
#
# Secrets: tokens and the runner configuration are never echoed, logged or
# put in an error message. Tokens reach curl through a header file in a
# private (0700) directory, never on its command line. By default the
# configuration reaches the runner through its environment, which only its
# own user (and root) can read; PACER_JITCONFIG_VIA=argv puts it on run.sh's
# command line instead, where every user of the machine can read it (ps,
# /proc) while the runner lives: use it only on a machine whose other users
# you trust, or for a run.sh that does not read the environment. The runner
# starts without this script's PACER_* variables, GITHUB_TOKEN and the
# Actions job's ACTIONS_* credentials (ACTIONS_RUNNER_* settings are kept),
# so its jobs cannot mint tokens as this machine. A job does run as the
# user running this script, and can do whatever that user can: run the
# token command itself, for one. Run the script as a user whose token
# source you would hand to any job this machine's labels attract.
#
# Requires bash, curl and jq (and tar, sha256sum or shasum to install the
# runner). Run it as the unprivileged user the runner should run as: the
# runner refuses root.
#
# Example, inside a GitHub Actions job (the job's OIDC token proves which
# workflow asks; pacer's trusted identity decides what it may get):
#
#   permissions:
#     id-token: write
#   steps:
#     - run: ./pacer-runner.sh   # a copy of infra/self-service/pacer-runner.sh
#       env:
#         PACER_URL: https://pacer.example.com
#         PACER_AUDIENCE: pacer-runners
#         PACER_LABELS: gpu,cuda-12
#         PACER_ONCE: "1"
#
# Example, on a machine with a token command (any program that prints a
# fresh OIDC token from an issuer pacer trusts):
#
#   PACER_URL=https://pacer.example.com \
#   PACER_TOKEN_COMMAND='my-idp-client token --audience pacer-runners' \
#   PACER_LABELS=gpu PACER_RUNNER_DIR=/srv/actions-runner \
#   ./pacer-runner.sh

set -uo pipefail
umask 077

SELF="${BASH_SOURCE[0]}"
STOP=0
STOP_STATUS=0
SIGNALS=0
RUN_PID=""
WORK=""
RUNNER=""
JIT=""
TOKEN=""
REASON=""
HTTP_STATUS=""

usage() {
    # The header above, without its comment marks.
    local line
    if [ ! -r "$SELF" ]; then
        printf 'pacer-runner: serves GitHub Actions jobs with pacer self-service runners; see the header of pacer-runner.sh\n'
        return
    fi
    while IFS= read -r line; do
        case "$line" in
            '#!'*) ;;
            '#'*)
                line="${line#\#}"
                printf '%s\n' "${line# }"
                ;;
            *) break ;;
        esac
    done <"$SELF"
}

log() {
    printf '%s pacer-runner: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2
}

die() {
    log "$*"
    exit 1
}

# shellcheck disable=SC2317 # called by the traps
# Called for SIGINT and SIGTERM: stop after what is in flight. The first
# signal asks the runner to stop, a second kills its process group.
on_signal() {
    local name="$1" number="$2"
    SIGNALS=$((SIGNALS + 1))
    if [ "$STOP" = 1 ]; then
        if [ -n "$RUN_PID" ]; then
            log "SIG$name again: killing the runner"
            kill -KILL -- "-$RUN_PID" 2>/dev/null || kill -KILL "$RUN_PID" 2>/dev/null
        fi
        return
    fi
    STOP=1
    STOP_STATUS=$((128 + number))
    log "SIG$name: stopping"
    if [ -n "$RUN_PID" ]; then
        kill -TERM "$RUN_PID" 2>/dev/null
    fi
}

# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    if [ -n "$WORK" ]; then
        rm -rf "$WORK"
    fi
}

# wait_for PID: waits for a background job to end, through any signals the
# traps take meanwhile (a trap cuts `wait` short); returns its status.
wait_for() {
    local pid="$1" status signals
    while :; do
        signals="$SIGNALS"
        wait "$pid"
        status=$?
        if [ "$status" -gt 128 ] && [ "$signals" != "$SIGNALS" ]; then
            continue
        fi
        return "$status"
    done
}

# pause SECONDS: sleeps, cut short by a stop.
pause() {
    local pid
    [ "$STOP" = 1 ] && return 0
    sleep "$1" &
    pid=$!
    wait "$pid" 2>/dev/null
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    return 0
}

is_token() {
    [[ "$1" =~ ^[A-Za-z0-9._~+/=-]+$ ]]
}

# fetch_token: a fresh token into TOKEN. Returns 0, 1 (fatal) or 2 (worth
# another try), with REASON.
fetch_token() {
    local token status sep audience
    TOKEN=""
    if [ -n "${PACER_TOKEN_COMMAND:-}" ]; then
        token="$(bash -c "$PACER_TOKEN_COMMAND" </dev/null)"
        status=$?
        if [ "$status" -ne 0 ]; then
            REASON="PACER_TOKEN_COMMAND failed with status $status"
            return 1
        fi
    else
        printf 'Authorization: bearer %s\n' "$ACTIONS_ID_TOKEN_REQUEST_TOKEN" >"$WORK/actions.header"
        sep='&'
        case "$ACTIONS_ID_TOKEN_REQUEST_URL" in *\?*) ;; *) sep='?' ;; esac
        audience="$(jq -rn --arg a "$PACER_AUDIENCE" '$a | @uri')"
        curl --silent --show-error --max-time "$CURL_TIMEOUT" \
            --header @"$WORK/actions.header" --header 'Accept: application/json' \
            --output "$WORK/id-token.json" --write-out '%{http_code}' \
            "$ACTIONS_ID_TOKEN_REQUEST_URL${sep}audience=$audience" \
            >"$WORK/id-token.status" 2>"$WORK/curl.err" &
        wait_for $!
        status="$(cat "$WORK/id-token.status" 2>/dev/null)"
        case "${status:-000}" in
            200) ;;
            000 | 429 | 5??)
                REASON="GitHub's ID token endpoint: $(answer_reason "${status:-000}" "$WORK/id-token.json")"
                rm -f "$WORK/id-token.json"
                return 2
                ;;
            *)
                REASON="GitHub's ID token endpoint refused with HTTP $status (does the job have permissions: id-token: write?)"
                rm -f "$WORK/id-token.json"
                return 1
                ;;
        esac
        token="$(jq -r '.value // empty' "$WORK/id-token.json" 2>/dev/null)"
        rm -f "$WORK/id-token.json"
    fi
    token="${token//[[:space:]]/}"
    if [ -z "$token" ]; then
        REASON="the token source gave an empty token"
        return 1
    fi
    if ! is_token "$token"; then
        REASON="the token source printed something that is not a token"
        return 1
    fi
    TOKEN="$token"
    printf 'Authorization: Bearer %s\n' "$TOKEN" >"$WORK/auth.header"
    return 0
}

# answer_reason STATUS FILE: why a request failed, for the log: pacer's
# message when it sent one, curl's error when nothing came back.
answer_reason() {
    local status="$1" file="$2" message field
    if [ "$status" = 000 ]; then
        message="$(tail -n 1 "$WORK/curl.err" 2>/dev/null)"
        printf 'no answer (%s)' "${message:-curl failed}"
        return
    fi
    message="$(jq -r 'if type == "object" then .message // empty else empty end' "$file" 2>/dev/null)"
    field="$(jq -r 'if type == "object" then .field // empty else empty end' "$file" 2>/dev/null)"
    message="${message//[[:cntrl:]]/ }"
    printf 'HTTP %s: %s' "$status" "${message:-no message}"
    if [ -n "$field" ]; then
        printf ' (field %s)' "${field//[[:cntrl:]]/ }"
    fi
}

# attempt METHOD PATH [BODY_FILE]: one request to pacer with a fresh token.
# Sets HTTP_STATUS (the answer in $WORK/response); returns 0 for an answer
# to act on, 1 (fatal) or 2 (worth another try), with REASON.
attempt() {
    local method="$1" path="$2" body="${3:-}" rc
    local args=(--silent --show-error --max-time "$CURL_TIMEOUT" --request "$method"
        --header @"$WORK/auth.header" --output "$WORK/response" --write-out '%{http_code}')
    HTTP_STATUS=""
    fetch_token
    rc=$?
    [ "$rc" -eq 0 ] || return "$rc"
    if [ -n "$body" ]; then
        args+=(--header 'Content-Type: application/json' --data-binary @"$body")
    fi
    rm -f "$WORK/response"
    # In the background (its own process group), so a Ctrl-C meant for this
    # script lets the request finish: its answer may name a runner to delete.
    curl "${args[@]}" "$PACER_URL$path" >"$WORK/status" 2>"$WORK/curl.err" &
    wait_for $!
    HTTP_STATUS="$(cat "$WORK/status" 2>/dev/null)"
    HTTP_STATUS="${HTTP_STATUS:-000}"
    rm -f "$WORK/auth.header"
    TOKEN=""
    case "$HTTP_STATUS" in
        000 | 429 | 5??)
            REASON="$(answer_reason "$HTTP_STATUS" "$WORK/response")"
            return 2
            ;;
    esac
    return 0
}

# Retries, as
#     begin_tries
#     while :; do an_attempt; again "doing it" $? || break; done
#     [ "$LAST_RC" -eq 0 ]
# where an_attempt returns like `attempt`: 0 done, 1 failed for good, 2
# worth another try (up to PACER_TRIES attempts, with a doubling backoff).
begin_tries() {
    TRY=1
    DELAY="$RETRY_DELAY"
    LAST_RC=1
}

# again WHAT RC: after an attempt that returned RC, logs why it failed and
# waits out the backoff; returns 0 to go again.
again() {
    local what="$1"
    LAST_RC="$2"
    case "$LAST_RC" in
        0) return 1 ;;
        2) ;;
        *)
            log "$what: $REASON"
            return 1
            ;;
    esac
    if [ "$TRY" -ge "$TRIES" ]; then
        log "$what: gave up after $TRY attempts; the last: $REASON"
        return 1
    fi
    log "$what: attempt $TRY of $TRIES: $REASON; trying again in ${DELAY}s"
    pause "$DELAY"
    TRY=$((TRY + 1))
    DELAY=$((DELAY * 2 > 60 ? 60 : DELAY * 2))
    return 0
}

random_hex() {
    printf '%06x' $(((RANDOM << 9 ^ RANDOM) & 0xffffff))
}

# provision_attempt: asks pacer for a runner under a new name; on success
# sets RUNNER and JIT.
provision_attempt() {
    local name rc
    if [ "$STOP" = 1 ]; then
        REASON="stopping"
        return 1
    fi
    COUNTER=$((COUNTER + 1))
    name="$NAME_BASE-$SUFFIX-$COUNTER"
    jq -n --arg name "$name" --argjson labels "$LABELS_JSON" \
        '{runner_name: $name, labels: $labels, ephemeral: true}' >"$WORK/provision.json" || {
        REASON="could not write the request"
        return 1
    }
    attempt POST /api/v1/runners/provision "$WORK/provision.json"
    rc=$?
    [ "$rc" -eq 0 ] || return "$rc"
    case "$HTTP_STATUS" in
        201) ;;
        409)
            # The name is taken (pacer keeps every name it gave): another one.
            REASON="$(answer_reason 409 "$WORK/response")"
            return 2
            ;;
        *)
            REASON="pacer refused the runner: $(answer_reason "$HTTP_STATUS" "$WORK/response")"
            return 1
            ;;
    esac
    RUNNER="$(jq -r '.runner_name // empty' "$WORK/response" 2>/dev/null)"
    JIT="$(jq -r '.encoded_jit_config // empty' "$WORK/response" 2>/dev/null)"
    PROVISIONED_LABELS="$(jq -r '.labels // [] | join(",")' "$WORK/response" 2>/dev/null)"
    PROVISIONED_EXPIRES="$(jq -r '.expires_at // "?"' "$WORK/response" 2>/dev/null)"
    rm -f "$WORK/response"
    if [[ ! "$RUNNER" =~ ^[A-Za-z0-9._-]+$ ]]; then
        RUNNER=""
        JIT=""
        REASON="pacer's answer names no usable runner"
        return 1
    fi
    return 0
}

# delete_attempt: DELETE the current runner; 404 means already gone.
delete_attempt() {
    local rc
    attempt DELETE "/api/v1/runners/$RUNNER"
    rc=$?
    [ "$rc" -eq 0 ] || return "$rc"
    case "$HTTP_STATUS" in
        200 | 404) return 0 ;;
    esac
    REASON="$(answer_reason "$HTTP_STATUS" "$WORK/response")"
    return 1
}

# release: deletes the current runner from pacer (and so from GitHub).
release() {
    [ -n "$RUNNER" ] || return 0
    JIT=""
    begin_tries
    while :; do
        delete_attempt
        again "deleting runner $RUNNER" $? || break
    done
    if [ "$LAST_RC" -eq 0 ]; then
        log "deleted runner $RUNNER"
    else
        log "could not delete runner $RUNNER; pacer's reaper removes it once its registration times out"
    fi
    RUNNER=""
}

runner_os() {
    case "$(uname -s)" in
        Linux) echo linux ;;
        Darwin) echo osx ;;
        *) return 1 ;;
    esac
}

runner_arch() {
    case "$(uname -m)" in
        x86_64 | amd64) echo x64 ;;
        aarch64 | arm64) echo arm64 ;;
        armv7l | armv6l) echo arm ;;
        *) return 1 ;;
    esac
}

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | cut -d ' ' -f 1
    elif command -v shasum >/dev/null 2>&1; then
        shasum -a 256 "$1" | cut -d ' ' -f 1
    else
        return 1
    fi
}

# install_runner: makes sure RUNNER_DIR holds an executable run.sh.
install_runner() {
    local os arch version url tarball actual expected
    if [ -x "$RUNNER_DIR/run.sh" ]; then
        log "using the runner in $RUNNER_DIR"
        return 0
    fi
    if [ "$DOWNLOAD" != 1 ]; then
        die "$RUNNER_DIR holds no executable run.sh, and PACER_RUNNER_DOWNLOAD=$DOWNLOAD forbids downloading one"
    fi
    url="${PACER_RUNNER_URL:-}"
    if [ -z "$url" ]; then
        os="$(runner_os)" || die "no actions/runner release for $(uname -s); install it in $RUNNER_DIR yourself"
        arch="$(runner_arch)" || die "no actions/runner release for $(uname -m); install it in $RUNNER_DIR yourself"
        version="${PACER_RUNNER_VERSION:-}"
        if [ -z "$version" ]; then
            version="$(curl --silent --show-error --fail --location --max-time "$CURL_TIMEOUT" \
                --header 'Accept: application/vnd.github+json' \
                https://api.github.com/repos/actions/runner/releases/latest | jq -r '.tag_name // empty')" \
                || die "could not learn the latest actions/runner release; set PACER_RUNNER_VERSION"
            [ -n "$version" ] || die "could not learn the latest actions/runner release; set PACER_RUNNER_VERSION"
        fi
        version="${version#v}"
        [[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "PACER_RUNNER_VERSION is not a version like 2.330.0: $version"
        url="https://github.com/actions/runner/releases/download/v$version/actions-runner-$os-$arch-$version.tar.gz"
    fi
    tarball="$WORK/runner.tar.gz"
    log "downloading the runner from $url"
    curl --silent --show-error --fail --location --retry 3 --max-time 600 --output "$tarball" "$url" \
        || die "downloading the runner failed"
    if [ -n "${PACER_RUNNER_SHA256:-}" ]; then
        expected="$(printf '%s' "$PACER_RUNNER_SHA256" | tr 'A-F' 'a-f')"
        actual="$(sha256_of "$tarball")" || die "found neither sha256sum nor shasum to check the download"
        if [ "$actual" != "$expected" ]; then
            rm -f "$tarball"
            die "the runner download's SHA-256 is $actual, not PACER_RUNNER_SHA256 $expected; refusing to unpack it"
        fi
        log "the runner download matches PACER_RUNNER_SHA256"
    else
        log "no PACER_RUNNER_SHA256: the download is not checked beyond TLS"
    fi
    mkdir -p "$RUNNER_DIR" || die "cannot create $RUNNER_DIR"
    tar -xzf "$tarball" -C "$RUNNER_DIR" || die "unpacking the runner into $RUNNER_DIR failed"
    rm -f "$tarball"
    [ -x "$RUNNER_DIR/run.sh" ] || die "the runner archive has no run.sh"
    log "installed the runner in $RUNNER_DIR"
}

# run_runner: starts run.sh with the configuration and waits for it;
# returns its status. RUN_PID is set while it runs.
run_runner() {
    local status
    log "starting runner $RUNNER"
    # A subshell of its own (and, under set -m, its own process group):
    # the environment is cleaned there, and exec makes it run.sh.
    (
        cd "$RUNNER_DIR" || exit 1
        while IFS= read -r name; do
            case "$name" in
                ACTIONS_RUNNER_*) ;;
                ACTIONS_* | PACER_* | GITHUB_TOKEN) unset "$name" ;;
            esac
        done < <(compgen -e)
        if [ "$JIT_VIA" = argv ]; then
            exec ./run.sh --jitconfig "$JIT"
        fi
        export ACTIONS_RUNNER_INPUT_JITCONFIG="$JIT"
        exec ./run.sh
    ) </dev/null &
    RUN_PID=$!
    if [ "$STOP" = 1 ]; then
        kill -TERM "$RUN_PID" 2>/dev/null
    fi
    wait_for "$RUN_PID"
    status=$?
    RUN_PID=""
    return "$status"
}

# serve_one: one runner, one job. Returns the runner's status, or 1 when
# no runner could be had (FATAL=1: stop).
serve_one() {
    local status
    FATAL=0
    begin_tries
    while :; do
        provision_attempt
        again "provisioning a runner" $? || break
    done
    if [ "$LAST_RC" -ne 0 ]; then
        FATAL=1
        return 1
    fi
    log "provisioned runner $RUNNER (labels $PROVISIONED_LABELS); it must come online by $PROVISIONED_EXPIRES"
    if [ "$STOP" = 1 ]; then
        log "not starting runner $RUNNER: stopping"
        release
        return 1
    fi
    if [ ! -x "$RUNNER_DIR/run.sh" ]; then
        log "$RUNNER_DIR/run.sh is gone; not starting runner $RUNNER"
        release
        FATAL=1
        return 1
    fi
    run_runner
    status=$?
    JIT=""
    if [ "$status" -eq 0 ]; then
        log "runner $RUNNER finished"
    else
        log "runner $RUNNER exited with status $status"
    fi
    release
    return "$status"
}

main() {
    local tool status failures=0 delay
    case "${1:-}" in
        -h | --help)
            usage
            return 0
            ;;
        '') ;;
        *)
            printf 'pacer-runner: unknown argument %s (the settings are environment variables; see --help)\n' "$1" >&2
            return 2
            ;;
    esac
    for tool in curl jq; do
        if ! command -v "$tool" >/dev/null 2>&1; then
            printf 'pacer-runner: %s is required but not installed (on PATH); install it and run again\n' "$tool" >&2
            return 2
        fi
    done

    [ -n "${PACER_URL:-}" ] || { log "PACER_URL is not set (see --help)"; return 2; }
    PACER_URL="${PACER_URL%/}"
    if [ -z "${PACER_TOKEN_COMMAND:-}" ]; then
        if [ -z "${ACTIONS_ID_TOKEN_REQUEST_URL:-}" ] || [ -z "${ACTIONS_ID_TOKEN_REQUEST_TOKEN:-}" ]; then
            log "no token source: set PACER_TOKEN_COMMAND, or run in a GitHub Actions job with permissions: id-token: write"
            return 2
        fi
        [ -n "${PACER_AUDIENCE:-}" ] || { log "PACER_AUDIENCE is not set: the audience pacer's trusted identity expects"; return 2; }
    fi
    RUNNER_DIR="${PACER_RUNNER_DIR:-${HOME:-.}/actions-runner}"
    DOWNLOAD="${PACER_RUNNER_DOWNLOAD:-1}"
    JIT_VIA="${PACER_JITCONFIG_VIA:-env}"
    ONCE="${PACER_ONCE:-0}"
    TRIES="${PACER_TRIES:-5}"
    RETRY_DELAY="${PACER_RETRY_DELAY:-2}"
    CURL_TIMEOUT="${PACER_CURL_TIMEOUT:-30}"
    case "$JIT_VIA" in env | argv) ;; *) log "PACER_JITCONFIG_VIA must be env or argv, not $JIT_VIA"; return 2 ;; esac
    for setting in TRIES RETRY_DELAY CURL_TIMEOUT; do
        [[ "${!setting}" =~ ^[0-9]+$ ]] || { log "PACER_$setting must be a whole number"; return 2; }
    done
    [ "$TRIES" -ge 1 ] || TRIES=1
    if [ -n "${PACER_RUNNER_NAME:-}" ]; then
        NAME_BASE="$PACER_RUNNER_NAME"
        [[ "$NAME_BASE" =~ ^[A-Za-z0-9._-]{1,48}$ ]] \
            || { log "PACER_RUNNER_NAME must be 1 to 48 of A-Z, a-z, 0-9, '.', '_' and '-'"; return 2; }
    else
        NAME_BASE="$(uname -n 2>/dev/null)"
        NAME_BASE="${NAME_BASE%%.*}"
        NAME_BASE="${NAME_BASE//[^A-Za-z0-9._-]/-}"
        NAME_BASE="${NAME_BASE:0:48}"
        NAME_BASE="${NAME_BASE:-runner}"
    fi
    LABELS_JSON="$(jq -cn --arg l "${PACER_LABELS:-}" \
        '[$l | split(",")[] | gsub("^\\s+|\\s+$"; "") | select(length > 0)]')" \
        || { log "cannot read PACER_LABELS"; return 2; }
    SUFFIX="$(random_hex)"
    COUNTER=0

    WORK="$(mktemp -d)" || { log "cannot create a private work directory"; return 1; }
    trap cleanup EXIT
    trap 'on_signal INT 2' INT
    trap 'on_signal TERM 15' TERM
    # Background jobs get their own process groups and keep the default
    # SIGINT (a non-interactive shell would have them ignore it, and the
    # runner could then not be asked to stop).
    set -m

    install_runner
    log "serving jobs for $PACER_URL as $NAME_BASE-$SUFFIX-<n>, labels ${PACER_LABELS:-(none)}"
    while [ "$STOP" != 1 ]; do
        serve_one
        status=$?
        [ "$STOP" = 1 ] && break
        [ "$FATAL" = 1 ] && return 1
        if [ "$ONCE" = 1 ]; then
            return "$status"
        fi
        if [ "$status" -eq 0 ]; then
            failures=0
            continue
        fi
        failures=$((failures + 1))
        if [ "$failures" -ge "$TRIES" ]; then
            log "the runner failed $failures times in a row; giving up"
            return 1
        fi
        delay=$((RETRY_DELAY * failures))
        log "next runner in ${delay}s"
        pause "$delay"
    done
    release
    return "$STOP_STATUS"
}

main "$@"
exit $?
