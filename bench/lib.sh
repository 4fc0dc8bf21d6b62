# Shell helpers shared by bench/run, bench/deliveries and bench/cpu-split (sourced; each script defines log and die
# first, with its own prefix). Everything installs from Debian and listens on 127.0.0.1 only.

SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
installed() { [ "$(dpkg -s "$1" 2>/dev/null | sed -n 's/^Status: //p')" = "install ok installed" ]; }
apt_updated=""
apt_install() {
    if [ -z "$apt_updated" ]; then
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -q
        apt_updated=1
    fi
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "$@"
}

# bench_tools [PACKAGE...]: wrk, sqlite3, python3, nginx and the given packages, installed when missing; sets NGINX
# and PY.
bench_tools() {
    local missing=() p
    for p in wrk sqlite3 python3 "$@"; do installed "$p" || missing+=("$p"); done
    if ! installed nginx-light && ! installed nginx && ! installed nginx-core && ! installed nginx-full; then
        missing+=(nginx-light)
    fi
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        apt_install "${missing[@]}" || {
            # nginx-light is gone from newer Debian releases; plain nginx is the same server.
            missing=("${missing[@]/nginx-light/nginx}")
            apt_install "${missing[@]}"
        }
    fi
    NGINX=$(command -v nginx || echo /usr/sbin/nginx)
    [ -x "$NGINX" ] || die "nginx not found after install"
    command -v wrk >/dev/null || die "wrk not found after install"
    command -v sqlite3 >/dev/null || die "sqlite3 not found after install"
    PY=/usr/bin/python3
    [ -x "$PY" ] || PY=$(command -v python3)
}

# relay_binary: BIN is $RELAY_BINARY, or the release build in $RELAY_BUILD_PATH (built now), as an absolute path.
relay_binary() {
    if [ -n "${RELAY_BINARY:-}" ]; then
        BIN=$RELAY_BINARY
    else
        log "building: swift build -c release --scratch-path $RELAY_BUILD_PATH"
        swift build -c release --scratch-path "$RELAY_BUILD_PATH" >&2
        BIN=$RELAY_BUILD_PATH/release/relay
    fi
    [ -x "$BIN" ] || die "no relay binary at $BIN"
    BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
}

stop_pid() {   # stop_pid PID SIGNAL: signal, wait up to 15 s, then SIGKILL
    local pid=$1 sig=$2
    kill -0 "$pid" 2>/dev/null || return 0
    kill "-$sig" "$pid" 2>/dev/null || true
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    log "pid $pid ignored SIG$sig for 15 s: killing"
    kill -KILL "$pid" 2>/dev/null || true
}

thread_cpu() {   # thread_cpu PID: "TID NAME TICKS WCHAR" per thread (user + system clock ticks, bytes written; spaces in
                 # a name as _); a thread that ends meanwhile is left out
    local t ticks wchar
    for t in /proc/"$1"/task/*; do
        ticks=$(awk '{sub(/^.*\) /, ""); print $12 + $13}' "$t/stat" 2>/dev/null) || continue
        [ -n "$ticks" ] || continue
        wchar=$(awk '/^wchar/ {print $2}' "$t/io" 2>/dev/null) || true
        echo "${t##*/} $(tr ' ' _ < "$t/comm" 2>/dev/null) $ticks ${wchar:-0}"
    done
}

free_port() {   # a TCP port on 127.0.0.1 that was free a moment ago
    "${PY:-python3}" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
