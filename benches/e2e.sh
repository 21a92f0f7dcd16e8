#!/usr/bin/env bash
# End to end: the example proxy with and without HealthClassifyLayer on its traffic path
# (probes keep the layer either way), and with a backend of two endpoints (balanced, each
# classified), loaded by wrk through loopback against nginx. Prints each run, then the
# median throughput and p99 latency of each and their ratios.
#
#   bash benches/e2e.sh [seconds per run (10)] [rounds (3)] [connections (16)]
#
# Installs wrk and nginx from Debian's packages when they are missing. Everything listens
# on 127.0.0.1 and stops when the script ends. The proxy is built where cargo puts it
# (`CARGO_TARGET_DIR` and cargo's own configuration are honoured). A round whose wrk run
# got no answer, a non-2xx answer or a socket error stops the script with its output.
set -euo pipefail
# Failures inside `$(run ...)` must stop the script too.
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
secs=${1:-10}
rounds=${2:-3}
conns=${3:-16}

if ! command -v wrk >/dev/null || ! [ -x /usr/sbin/nginx ]; then
  echo "installing wrk and nginx-light" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light >/dev/null
fi

cargo build --release --example proxy -q
target_dir=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
proxy=$target_dir/release/examples/proxy
if ! [ -x "$proxy" ]; then
  echo "the proxy was built, but is not at $proxy" >&2
  exit 1
fi

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on $1" >&2
  return 1
}

backend_port=$(free_port)
second_port=$(free_port)
cat >"$work/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log stderr error;
events { worker_connections 4096; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$backend_port;
    listen 127.0.0.1:$second_port;
    location / { return 200 "ok\n"; }
  }
}
CONF
/usr/sbin/nginx -c "$work/nginx.conf" -p "$work" &
pids+=($!)
wait_port "$backend_port"
wait_port "$second_port"

proxy_port=$(free_port)
cat >"$work/proxy.toml" <<CONF
listen = "127.0.0.1:$proxy_port"
[health]
interval = "30s"
[[backends]]
name = "bench"
url = "http://127.0.0.1:$backend_port"
strategy = "unauthenticated"
CONF
# The same, the backend with two endpoints (two ports of the same nginx).
sed 's|^url = .*|urls = ["http://127.0.0.1:'"$backend_port"'", "http://127.0.0.1:'"$second_port"'"]|' \
  "$work/proxy.toml" >"$work/proxy-endpoints.toml"

# Fails unless wrk's output `$2` shows answers, all 2xx, and no socket error.
check_wrk() {
  local what=$1 out=$2 rps
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  if [ -z "$rps" ] || ! awk -v r="$rps" 'BEGIN {exit !(r > 0)}' ||
    grep -qE '^ +(Non-2xx or 3xx responses|Socket errors):' <<<"$out"; then
    printf '%s got no clean answers:\n%s\n' "$what" "$out" >&2
    return 1
  fi
}

# One wrk run against a freshly started proxy; prints "requests_per_sec p99_ms".
run() {
  local mode=$1
  case "$mode" in
  without)
    PROXY_WITHOUT_CLASSIFY_LAYER=1 RUST_LOG=warn "$proxy" --config "$work/proxy.toml" >"$work/proxy.log" 2>&1 &
    ;;
  endpoints)
    RUST_LOG=warn "$proxy" --config "$work/proxy-endpoints.toml" >"$work/proxy.log" 2>&1 &
    ;;
  *)
    RUST_LOG=warn "$proxy" --config "$work/proxy.toml" >"$work/proxy.log" 2>&1 &
    ;;
  esac
  local pid=$! out ok=0
  wait_port "$proxy_port" &&
    out=$(wrk -t1 -c"$conns" -d1s "http://127.0.0.1:$proxy_port/bench/") && # warm-up
    check_wrk "the $mode warm-up" "$out" &&
    out=$(wrk -t1 -c"$conns" -d"${secs}s" --latency "http://127.0.0.1:$proxy_port/bench/") &&
    check_wrk "the $mode run" "$out" &&
    ok=1
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  if [ "$ok" != 1 ]; then
    echo "the proxy's log:" >&2
    tail -n 20 "$work/proxy.log" >&2
    return 1
  fi
  local rps p99
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; print v}' <<<"$out")
  echo "$rps $p99"
}

echo "wrk -t1 -c$conns -d${secs}s, $rounds rounds, alternating; $(nproc) cores"
modes="with without endpoints"
for mode in $modes; do : >"$work/$mode"; done
for round in $(seq "$rounds"); do
  for mode in $modes; do
    result=$(run "$mode")
    echo "$result" >>"$work/$mode"
    printf 'round %s %-9s %10.0f req/s   p99 %6.2f ms\n' "$round" "$mode" $result
  done
done

median() { sort -n | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
echo
for mode in $modes; do
  rps=$(cut -d' ' -f1 "$work/$mode" | median)
  p99=$(cut -d' ' -f2 "$work/$mode" | median)
  echo "$rps" >"$work/$mode.rps"
  printf 'median %-9s %10.0f req/s   p99 %6.2f ms\n' "$mode" "$rps" "$p99"
done
ratio() { awk -v a="$(cat "$work/$1.rps")" -v b="$(cat "$work/$2.rps")" 'BEGIN {printf "%.3f", a / b}'; }
echo "throughput ratio (with / without): $(ratio with without)"
echo "throughput ratio (two endpoints / one, both with the layer): $(ratio endpoints with)"
