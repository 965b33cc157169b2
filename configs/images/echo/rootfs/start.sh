#!/bin/sh
# PID 1 of the shoal-test/echo workload: serves $DOC with busybox httpd on $PORT, and a
# TCP echo (/bin/tcp-echo) on $TCP_PORT (9000 by default; 0 turns it off).
# SIGTERM stops httpd and exits 0; SIGUSR1 (from /cgi-bin/crash) exits with the code in
# /tmp/crash-code; SIGUSR2 (from /cgi-bin/alloc) makes PID 1 hold /tmp/alloc-mb more MiB.
PORT="${PORT:-8080}"
TCP_PORT="${TCP_PORT:-9000}"
VERSION="${VERSION:-v0}"
DOC=/www
stop=0
crash=0
alloc=0
held=""

# State of one container start lives in /tmp and /www/healthz: a restart (docker start of
# the same container, whose writable layer survives) begins afresh.
rm -rf /tmp/* /tmp/.[!.]* 2>/dev/null

trap 'stop=1' TERM INT
trap 'crash=1' USR1
trap 'alloc=1' USR2

if [ -n "$START_DELAY" ] && [ "$START_DELAY" != "0" ]; then
    echo "echo $VERSION: delaying start by ${START_DELAY}s"
    sleep "$START_DELAY" &
    wait $!
    if [ "$stop" = 1 ]; then exit 0; fi
fi

printf '%s %s\n' "$VERSION" "$(hostname)" > "$DOC/index.html"
echo ok > "$DOC/healthz"
httpd -f -p "$PORT" -h "$DOC" &
pid=$!
tcp=""
if [ "$TCP_PORT" != "0" ]; then
    nc -ll -p "$TCP_PORT" -e /bin/tcp-echo &
    tcp=$!
fi
echo "echo $VERSION listening on :$PORT as $(hostname)"

while :; do
    wait "$pid"
    rc=$?
    if [ "$stop" = 1 ]; then
        kill -TERM "$pid" $tcp 2>/dev/null
        wait "$pid"
        echo "echo $VERSION: stopped"
        exit 0
    fi
    if [ "$crash" = 1 ]; then
        code="$(cat /tmp/crash-code 2>/dev/null)"
        kill -KILL "$pid" $tcp 2>/dev/null
        echo "echo $VERSION: crashing with exit code ${code:-1}"
        exit "${code:-1}"
    fi
    if [ "$alloc" = 1 ]; then
        alloc=0
        mb="$(cat /tmp/alloc-mb 2>/dev/null)"
        echo "echo $VERSION: allocating ${mb:-0} MiB"
        held="$held$(head -c "$((${mb:-0} * 1048576))" /dev/zero | tr '\0' x)"
        echo "echo $VERSION: holding $((${#held} / 1048576)) MiB"
        continue
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "echo $VERSION: httpd exited with $rc"
        exit "$rc"
    fi
done
