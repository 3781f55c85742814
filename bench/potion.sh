#!/usr/bin/env bash
# Starts, on loopback: a private Redis, ilo-api (SQLite, limits off) and two potion relays
# (send limit off), runs `potion-bench` against them with the arguments given, then stops all.
#   bench/potion.sh                                   # reference load
#   bench/potion.sh --rate-steps 20,100,200,400,800   # saturation
#   bench/potion.sh --idle 10000                      # memory per idle connection
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p ilo-api -p potion -p ilo-bench
ulimit -n 20000 2>/dev/null || true

dir=$(mktemp -d /tmp/potion-bench.XXXXXX)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT

redis-server --port 16379 --bind 127.0.0.1 --save '' --appendonly no >"$dir/redis.log" 2>&1 &
pids+=($!)
ILO_HTTP_ADDR=127.0.0.1:18080 ILO_GRPC_ADDR=127.0.0.1:15051 DATABASE_URL="sqlite://$dir/ilo.db" \
  ILO_KEY_RATE=0 ILO_LOGIN_FAILURES=0 ILO_LOOKUP_RATE=0 ILO_LOGIN_RATE=0 ILO_REGISTER_RATE=0 \
  ILO_HASH_PER_CLIENT=0 RUST_LOG=warn \
  target/release/ilo-api >"$dir/api.log" 2>&1 &
pids+=($!)
relay_pids=()
for port in 18081 18082; do
  POTION_ADDR=127.0.0.1:$port ILO_GRPC_URL=http://127.0.0.1:15051 REDIS_URL=redis://127.0.0.1:16379/ \
    POTION_SEND_RATE=0 POTION_MAX_CONNECTIONS_PER_ADDRESS=1000000 RUST_LOG=warn target/release/potion >"$dir/potion-$port.log" 2>&1 &
  pids+=($!)
  relay_pids+=($!)
done
for url in http://127.0.0.1:18080/ready http://127.0.0.1:18081/ready http://127.0.0.1:18082/ready; do
  for _ in $(seq 100); do curl -fs "$url" >/dev/null && break; sleep 0.1; done
done

[ -n "${PERF_OUT:-}" ] && { perf record -F 999 -g -o "$PERF_OUT" -p "${relay_pids[0]}" &>/dev/null & pids+=($!); }
target/release/potion-bench --api http://127.0.0.1:18080 \
  --relays ws://127.0.0.1:18081/ws,ws://127.0.0.1:18082/ws \
  --relay-pids "$(IFS=,; echo "${relay_pids[*]}")" "$@"
# What Redis spent: per command (the history script is EVALSHA, a bare fan-out PUBLISH) and in all.
redis-cli -p 16379 INFO commandstats | tr -d '\r' | grep -E '^cmdstat_(evalsha|publish):' | sed 's/^/redis /'
redis-cli -p 16379 INFO cpu | tr -d '\r' | grep -E '^used_cpu_(sys|user):' | sed 's/^/redis /'
