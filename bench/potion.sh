#!/usr/bin/env bash
# Starts, on loopback: a private Redis, ilo-api (SQLite, limits off) and two potion relays
# (send limit off), runs `potion-bench` against them with the arguments given, then stops all.
#   bench/potion.sh                                   # reference load
#   bench/potion.sh --rate-steps 20,100,200,400,800   # saturation
#   bench/potion.sh --idle 10000                      # memory per idle connection
#   BUS=cluster bench/potion.sh ...                   # the same on a 3-master Redis Cluster
# Afterwards it prints what each Redis node spent: per command and its CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p ilo-api -p potion -p ilo-bench
ulimit -n 20000 2>/dev/null || true

dir=$(mktemp -d /tmp/potion-bench.XXXXXX)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT

if [ "${BUS:-redis}" = cluster ]; then
  # Three masters, no replicas: the figures are what each shard carries.
  nodes=(17001 17002 17003)
  for port in "${nodes[@]}"; do
    mkdir -p "$dir/node-$port"
    redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes --dir "$dir/node-$port" \
      --save '' --appendonly no >"$dir/redis-$port.log" 2>&1 &
    pids+=($!)
  done
  for port in "${nodes[@]}"; do
    until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.1; done
  done
  redis-cli --cluster create $(printf '127.0.0.1:%s ' "${nodes[@]}") --cluster-replicas 0 \
    --cluster-yes >/dev/null
  until redis-cli -p "${nodes[0]}" cluster info | grep -q cluster_state:ok; do sleep 0.1; done
  bus=("REDIS_CLUSTER=$(printf 'redis://127.0.0.1:%s,' "${nodes[@]}")")
else
  nodes=(16379)
  redis-server --port 16379 --bind 127.0.0.1 --save '' --appendonly no >"$dir/redis.log" 2>&1 &
  pids+=($!)
  bus=(REDIS_URL=redis://127.0.0.1:16379/)
fi
ILO_HTTP_ADDR=127.0.0.1:18080 ILO_GRPC_ADDR=127.0.0.1:15051 DATABASE_URL="sqlite://$dir/ilo.db" \
  ILO_KEY_RATE=0 ILO_LOGIN_FAILURES=0 ILO_LOOKUP_RATE=0 ILO_LOGIN_RATE=0 ILO_REGISTER_RATE=0 \
  ILO_HASH_PER_CLIENT=0 RUST_LOG=warn \
  target/release/ilo-api >"$dir/api.log" 2>&1 &
pids+=($!)
relay_pids=()
for port in 18081 18082; do
  env "${bus[@]}" POTION_ADDR=127.0.0.1:$port ILO_GRPC_URL=http://127.0.0.1:15051 \
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
# What each Redis node spent: per command (the history script is EVALSHA, a bare fan-out PUBLISH
# or SPUBLISH) and in all.
for port in "${nodes[@]}"; do
  redis-cli -p "$port" INFO commandstats | tr -d '\r' |
    grep -E '^cmdstat_(evalsha|publish|spublish):' | sed "s/^/redis $port /"
  redis-cli -p "$port" INFO cpu | tr -d '\r' | grep -E '^used_cpu_(sys|user):' | sed "s/^/redis $port /"
done
