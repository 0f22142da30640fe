#!/usr/bin/env bash
# compose-scale-smoke.sh: prove several api replicas behind nginx (issue 17), then clean up.
#
#   bash scripts/compose-scale-smoke.sh
#
# With docker-compose.yml as it is (nginx `proxy` in front of `api`), from empty volumes:
#
#  1. up       `up -d --scale api=3 --wait`: three healthy replicas publishing no port,
#              one worker, the proxy on the published port; the demo seed; every replica
#              serves the seeded model and the same recommendations through the proxy;
#              X-Forwarded-* are believed from the proxy only (logs and /metrics of each
#              replica show the client); the proxy's body limit is the api's.
#  2. ryw      read-your-writes: after each rating posted through the proxy, every
#              replica leaves the rated item out of that user's next recommendations.
#  3. retrain  POST /admin/retrain through the proxy reaches the single worker; any
#              replica reports the run.
#  4. failover bounded load through the proxy (a fixed number of requests at a fixed
#              rate, one in five a POST /ratings); meanwhile one replica is killed
#              (`docker kill`) and later restarted. GET failures must be 0; POST
#              failures are counted and reported, then re-sent (an upsert: idempotent),
#              and the store must hold each posted rating exactly once.
#  5. activate an older version activated through one replica, then the newer one
#              through the CLI: every replica serves it within the poll interval
#              (measured), and GET /model never flips back once all have switched.
#  6. down-up  `down` then `up` again with the volumes: nothing lost.
#
# Each check passes or counts as failed; the run goes on where it can and ends with a
# summary per point. Own compose project (COMPOSE_PROJECT_NAME, default
# rbmrec-scale-smoke) and image (APP_IMAGE, default rbmrec:scale-smoke), no .env read;
# containers, volumes and the image are removed on exit (SMOKE_KEEP=1 keeps them).
# Exit status: 0 every check passed, 1 a check failed, 2 no Docker engine answers.
#
# Environment:
#   MOVIELENS_HOST_DIR   MovieLens 100K on this host (default: RBMREC_TEST_MOVIELENS_DIR,
#                        else the seed downloads it)
#   API_PORT             host port of the proxy on 127.0.0.1 (default 8000, or a free
#                        port when 8000 is taken)
#   SMOKE_REPLICAS       api replicas (default 3)
#   SMOKE_LOAD_REQUESTS  requests of the failover load (default 4500, at SMOKE_LOAD_RATE
#                        requests/s, default 150: 30 s)
#   SMOKE_FAILOVER_ROUNDS  failover rounds, each killing the next replica (default 1)
#   SMOKE_WAIT_SECONDS   bound on every wait (default 180)
set -Eeuo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-rbmrec-scale-smoke}
export APP_IMAGE=${APP_IMAGE:-rbmrec:scale-smoke}
export API_BIND=127.0.0.1
replicas=${SMOKE_REPLICAS:-3}
load_requests=${SMOKE_LOAD_REQUESTS:-4500}
load_rate=${SMOKE_LOAD_RATE:-150}
failover_rounds=${SMOKE_FAILOVER_ROUNDS:-1}
wait_s=${SMOKE_WAIT_SECONDS:-180}
keep=${SMOKE_KEEP:-0}
poll_s=2            # RBMREC_MODEL_POLL_SECONDS of this run
switch_slack_s=2    # what loading a model may add to the poll interval
body_limit=65536    # RBMREC_MAX_BODY_BYTES of this run: the proxy must follow it
user=1

log() { printf '[scale %4ss] %s\n' "$SECONDS" "$*"; }
die() {
	log "FAILED: $*" >&2
	exit 1
}
trap 'log "FAILED at line $LINENO: $BASH_COMMAND" >&2' ERR

if ! docker info >/dev/null 2>&1; then
	echo "compose-scale-smoke: no Docker engine answers (docker info failed)" >&2
	exit 2
fi
if ! docker compose version >/dev/null 2>&1; then
	echo "compose-scale-smoke: the docker compose plugin is missing" >&2
	exit 2
fi
[[ $replicas -ge 2 ]] || die "SMOKE_REPLICAS must be at least 2"

work=$(mktemp -d)
cat >"$work/app.env" <<EOF
RBMREC_MODEL_POLL_SECONDS=$poll_s
RBMREC_MAX_BODY_BYTES=$body_limit
RBMREC_LOG_LEVEL=INFO
# The proxy publishes on 127.0.0.1 only and the checks send no key: open on purpose.
RBMREC_ALLOW_OPEN=true
EOF
export APP_ENV_FILE="$work/app.env"
# The passwords compose requires, fresh for this run's own volume.
cat >"$work/compose.env" <<EOF
POSTGRES_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
POSTGRES_APP_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
EOF
dc() { docker compose --env-file "$work/compose.env" "$@"; }

# -- the checks and their summary ----------------------------------------------------
points=(up ryw retrain failover activate down-up)
declare -A failed_checks passed_checks
for p in "${points[@]}"; do failed_checks[$p]=0 passed_checks[$p]=0; done
failures=0
pass() {
	passed_checks[$1]=$((passed_checks[$1] + 1))
	log "ok   [$1] $2"
}
fail() {
	failed_checks[$1]=$((failed_checks[$1] + 1))
	failures=$((failures + 1))
	log "FAIL [$1] $2" >&2
}
# check POINT DESCRIPTION COMMAND...: pass when COMMAND succeeds.
check() {
	local point=$1 what=$2
	shift 2
	if "$@"; then pass "$point" "$what"; else fail "$point" "$what"; fi
}
summary() {
	log "summary (checks passed / failed per point):"
	for p in "${points[@]}"; do
		local verdict=PASS
		[[ ${failed_checks[$p]} == 0 && ${passed_checks[$p]} -gt 0 ]] || verdict=FAIL
		log "  $verdict $p: ${passed_checks[$p]} passed, ${failed_checks[$p]} failed"
	done
}

cleanup() {
	local status=$?
	if [[ $status != 0 ]]; then
		dc ps -a >&2 || true
		dc logs --no-color --tail 30 >&2 || true
	fi
	if [[ $keep == 1 ]]; then
		log "SMOKE_KEEP=1: left running; remove with: docker compose -p $COMPOSE_PROJECT_NAME down -v --rmi local"
	else
		dc down -v --rmi local --remove-orphans -t 10 >/dev/null 2>&1 || true
		docker image prune -f --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" >/dev/null 2>&1 || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if [[ -z ${API_PORT:-} ]]; then
	API_PORT=8000
	if port_in_use "$API_PORT"; then
		API_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
		log "port 8000 is taken on this host; publishing the proxy on $API_PORT"
	fi
fi
export API_PORT
base="http://127.0.0.1:$API_PORT"

if [[ -z ${MOVIELENS_HOST_DIR:-} && -n ${RBMREC_TEST_MOVIELENS_DIR:-} ]]; then
	MOVIELENS_HOST_DIR=$RBMREC_TEST_MOVIELENS_DIR
fi
if [[ -n ${MOVIELENS_HOST_DIR:-} ]]; then
	[[ -f $MOVIELENS_HOST_DIR/u.data ]] || die "MOVIELENS_HOST_DIR=$MOVIELENS_HOST_DIR has no u.data"
	MOVIELENS_HOST_DIR=$(cd "$MOVIELENS_HOST_DIR" && pwd)
	export MOVIELENS_HOST_DIR
else
	mkdir -p "$work/movielens"
	export MOVIELENS_HOST_DIR="$work/movielens"
fi

# -- helpers -------------------------------------------------------------------------
# http METHOD PATH [JSON]: the status on stdout; body in $work/body, headers in $work/headers.
http() {
	local args=(-sS --max-time 20 -o "$work/body" -D "$work/headers" -w '%{http_code}' -X "$1")
	if [[ $# -ge 3 ]]; then args+=(-H 'Content-Type: application/json' --data "$3"); fi
	curl "${args[@]}" "$base$2" 2>>"$work/curl.log" || echo 000
}
# The replica named by the last answer (empty when nginx answered itself).
answered_by() { sed -n 's/^rbmrec-replica: *\([^[:space:]]*\).*/\1/Ip' "$work/headers" | head -1; }
# jq_py EXPR [FILE]: a Python expression over the JSON document `d`.
jq_py() {
	python3 -c 'import json, sys; d = json.load(open(sys.argv[2])); r = eval(sys.argv[1]); print(r if isinstance(r, str) else json.dumps(r))' "$1" "${2:-$work/body}"
}
load() { python3 scripts/proxy_load.py "$@"; }
psql_db() { dc exec -T db psql -U rbmrec -d rbmrec -Atc "$1"; }
rated_items() { psql_db "SELECT item_id FROM ratings WHERE user_id = '$user' ORDER BY item_id"; }
counts() { psql_db "SELECT (SELECT count(*) FROM ratings) || ' ratings, ' || (SELECT count(*) FROM items) || ' items, ' || (SELECT count(*) FROM model_versions) || ' model versions'"; }
active_version() { psql_db "SELECT id FROM model_versions WHERE status = 'active'"; }
api_ids() { dc ps -q api; }
# short container id -> its compose name (replicas name themselves by host name = short id)
name_of() { docker inspect -f '{{.Name}}' "$1" | sed 's,^/,,'; }
state_of() { docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$1"; }
wait_all_healthy() {
	local deadline=$((SECONDS + wait_s)) id ok
	while :; do
		ok=1
		for id in $(api_ids) $(dc ps -q proxy); do [[ $(state_of "$id") == healthy ]] || ok=0; done
		[[ $ok == 1 && $(api_ids | wc -l) == "$replicas" ]] && return 0
		((SECONDS < deadline)) || die "the replicas and the proxy were not healthy within ${wait_s}s"
		sleep 0.5
	done
}
# wait_switched VERSION: until every replica serves VERSION through the proxy.
wait_switched() {
	load watch-model --url "$base" --version "$1" --replicas "$replicas" --hold 0 \
		--timeout-total "$wait_s" >"$work/watch.json"
	[[ $(jq_py 'd["all_switched_at"] is not None' "$work/watch.json") == true ]]
}
# recommend_everywhere OUT: user's top 10 from every replica through the proxy, one
# file per replica OUT.<replica>; fails when a replica does not answer within 40 tries.
recommend_everywhere() {
	local out=$1 tries=0 code replica
	rm -f "$out".*
	while (($(n_files "$out") < replicas)); do
		((tries++ < 40)) || return 1
		code=$(http GET "/users/$user/recommendations?n=10")
		[[ $code == 200 ]] || {
			log "GET recommendations answered $code: $(head -c 300 "$work/body")"
			return 1
		}
		replica=$(answered_by)
		cp "$work/body" "$out.$replica"
	done
}
n_files() { # n_files PREFIX: how many files PREFIX.* exist
	local f n=0
	for f in "$1".*; do [[ -e $f ]] && n=$((n + 1)); done
	echo "$n"
}
item_ids() { jq_py '" ".join(i["item_id"] for i in d["items"])' "$1"; }
# rated_in FILE: the recommended items of FILE that user has rated (empty: none).
rated_in() {
	rated_items >"$work/rated"
	python3 -c 'import json, sys
rated = set(open(sys.argv[2]).read().split())
print(" ".join(i["item_id"] for i in json.load(open(sys.argv[1]))["items"] if i["item_id"] in rated))' "$1" "$work/rated"
}
# api_log_client PATH: the client address the replicas logged for PATH (waits for the
# line: Docker's logs may lag behind on a busy machine).
api_log_client() {
	local deadline=$((SECONDS + 20)) found
	while :; do
		found=$(dc logs --no-color api 2>/dev/null | grep -F "\"GET $1 HTTP" | sed -n 's/.*uvicorn.access: \([^ ]*\):[0-9]* - .*/\1/p' | head -1)
		[[ -z $found && $SECONDS -lt $deadline ]] || break
		sleep 0.5
	done
	echo "$found"
}
proxy_log_client() { # proxy_log_client PATH: the client address nginx logged for PATH
	local deadline=$((SECONDS + 20)) found
	while :; do
		found=$(dc logs --no-color proxy 2>/dev/null | grep -F "\"GET $1 HTTP" | awk '{print $3}' | head -1)
		[[ -z $found && $SECONDS -lt $deadline ]] || break
		sleep 0.5
	done
	echo "$found"
}
exec_py() { # exec_py CONTAINER CODE: run Python in a replica (or the worker)
	docker exec -i "$1" python -c "$2"
}

# == 1. up with 3 replicas and the demo seed; recommendations through the proxy ======
dc down -v --remove-orphans -t 5 >/dev/null 2>&1 || true
log "project $COMPOSE_PROJECT_NAME, image $APP_IMAGE, proxy on $base, $replicas api replicas"
start=$SECONDS
dc build --quiet >"$work/build.log" 2>&1 || die "the image build failed: $(tail -20 "$work/build.log")"
log "image built in $((SECONDS - start)) s"

t0=$(date +%s.%N)
dc up -d --scale "api=$replicas" --wait >"$work/up.log" 2>&1 || die "docker compose up --scale api=$replicas --wait failed: $(tail -20 "$work/up.log")"
t1=$(date +%s.%N)
log "'up -d --scale api=$replicas --wait' from empty volumes returned after $(python3 -c "print(f'{$t1 - $t0:.1f}')") s"
wait_all_healthy
mapfile -t ids < <(api_ids)
check up "$replicas api replicas run, all healthy" test "${#ids[@]}" -eq "$replicas"
published=""
for id in "${ids[@]}"; do published+=$(docker port "$id"); done
check up "the api replicas publish no port" test -z "$published"
proxy_id=$(dc ps -q proxy)
check up "the proxy publishes 127.0.0.1:$API_PORT" \
	test "$(docker port "$proxy_id" 80/tcp)" = "127.0.0.1:$API_PORT"
check up "one worker" test "$(dc ps -q worker | wc -l)" -eq 1

start=$SECONDS
if ! dc run --rm -T seed >"$work/seed.log" 2>&1; then
	cat "$work/seed.log" >&2
	die "the seed failed"
fi
v1=$(grep -oE 'trained and activated model version [^ ]+' "$work/seed.log" | awk '{print $NF}')
[[ -n $v1 ]] || die "the seed trained no model: $(tail -5 "$work/seed.log")"
log "seeded in $((SECONDS - start)) s: model $v1; store: $(counts)"
check up "every replica serves the seeded model $v1" wait_switched "$v1"

sha=$(psql_db "SELECT sha256 FROM model_versions WHERE id = '$v1'")
own_copies=0
for id in "${ids[@]}"; do
	[[ $(exec_py "$id" "import os
from app.services.serving_cache import default_cache_root
copy = default_cache_root() / '$sha'
print(copy.is_dir() and os.stat(copy).st_dev != os.stat('/var/lib/rbmrec/models').st_dev)") == True ]] && own_copies=$((own_copies + 1))
done
check up "each replica serves a verified copy of the model in its own container, not on the shared volume ($own_copies of $replicas)" \
	test "$own_copies" = "$replicas"

if recommend_everywhere "$work/recs1"; then
	pass up "recommendations for user $user through the proxy from each of the $replicas replicas"
	first=$(ls "$work"/recs1.* | head -1)
	same=1 sound=1
	for f in "$work"/recs1.*; do
		[[ $(item_ids "$f") == "$(item_ids "$first")" ]] || same=0
		[[ $(jq_py 'd["strategy"], d["model_version"], len(d["items"])' "$f") == "[\"rbm\", \"$v1\", 10]" ]] || sound=0
		[[ -z $(rated_in "$f") ]] || sound=0
	done
	check up "each is 10 unrated items by the rbm strategy of model $v1" test "$sound" = 1
	check up "the replicas answer the same list: $(item_ids "$first")" test "$same" = 1
else
	fail up "recommendations for user $user through the proxy from each replica"
fi

# The client address: believed from the proxy only.
proxy_ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "$proxy_id" | xargs)
marker="xff-$RANDOM$RANDOM"
curl -sS -o /dev/null -H 'X-Forwarded-For: 203.0.113.66' "$base/users/$marker/ratings"
nginx_saw=$(proxy_log_client "/users/$marker/ratings")
api_saw=$(api_log_client "/users/$marker/ratings")
check up "a replica logs the client address nginx saw ($api_saw), not the proxy's ($proxy_ip) nor a client's own X-Forwarded-For" \
	bash -c '[[ -n $1 && $1 == "$2" && " $3 " != *" $1 "* && $1 != 203.0.113.66 ]]' _ "$api_saw" "$nginx_saw" "$proxy_ip"
worker_id=$(dc ps -q worker)
worker_ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "$worker_id")
exec_py "$worker_id" "import urllib.request as u; u.urlopen(u.Request('http://api:8000/users/$marker-direct/ratings', headers={'X-Forwarded-For': '203.0.113.77'}), timeout=10)"
direct_saw=$(api_log_client "/users/$marker-direct/ratings")
check up "X-Forwarded-For from another peer (the worker, $direct_saw) is ignored" \
	bash -c '[[ -n $1 && " $2 " == *" $1 "* ]]' _ "$direct_saw" "$worker_ip"
metrics_ok=1
for id in "${ids[@]}"; do
	exec_py "$id" "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8000/metrics', timeout=10).read().decode())" >"$work/metrics" || metrics_ok=0
	grep -q "^rbmrec_replica_info{replica=\"${id:0:12}\"} 1.0" "$work/metrics" || metrics_ok=0
	grep -q "^rbmrec_http_client_requests_total{client=\"$nginx_saw\"}" "$work/metrics" || metrics_ok=0
done
check up "each replica's /metrics names it (rbmrec_replica_info) and counts the client $nginx_saw" test "$metrics_ok" = 1

head -c "$body_limit" /dev/zero | tr '\0' x >"$work/at-limit"
head -c $((body_limit + 1)) /dev/zero | tr '\0' x >"$work/over-limit"
code=$(curl -sS -o "$work/body" -D "$work/headers" -w '%{http_code}' -H 'Content-Type: application/json' --data-binary @"$work/at-limit" "$base/ratings")
check up "a body of RBMREC_MAX_BODY_BYTES=$body_limit bytes passes the proxy (the api answers $code)" \
	bash -c '[[ $1 != 413 && -n $2 ]]' _ "$code" "$(answered_by)"
code=$(curl -sS -o "$work/body" -D "$work/headers" -w '%{http_code}' -H 'Content-Type: application/json' --data-binary @"$work/over-limit" "$base/ratings")
proxy_detail=$(jq_py 'd["detail"]' 2>/dev/null || echo "not JSON: $(head -c 200 "$work/body")")
api_detail=$(docker exec -i "${ids[0]}" python -c "import urllib.request as u, urllib.error as e, sys
try:
    u.urlopen(u.Request('http://127.0.0.1:8000/ratings', data=b'x' * ($body_limit + 1), headers={'Content-Type': 'application/json'}), timeout=10)
except e.HTTPError as err:
    import json; print(json.load(err)['detail'])")
check up "one byte more: 413 from the proxy, a problem document saying what the api says ($proxy_detail)" \
	bash -c '[[ $1 == 413 && $2 == "$3" && -z $4 ]] && grep -qi "^content-type: application/problem+json" "$5"' \
	_ "$code" "$proxy_detail" "$api_detail" "$(answered_by)" "$work/headers"

# == 2. read-your-writes across replicas ============================================
violations=0
for round in 1 2 3; do
	recommend_everywhere "$work/before" || {
		fail ryw "recommendations from every replica (round $round)"
		continue
	}
	top=$(jq_py 'd["items"][0]["item_id"]' "$(ls "$work"/before.* | head -1)")
	code=$(http POST /ratings "{\"user_id\": \"$user\", \"item_id\": \"$top\", \"rating\": 4}")
	wrote=$(answered_by)
	[[ $code == 201 ]] || {
		fail ryw "POST /ratings answered $code: $(head -c 300 "$work/body")"
		continue
	}
	recommend_everywhere "$work/after" || {
		fail ryw "recommendations from every replica after the write (round $round)"
		continue
	}
	for f in "$work"/after.*; do
		if grep -qw -- "$top" <<<"$(item_ids "$f")"; then
			violations=$((violations + 1))
			log "replica ${f##*.} still recommends item $top after replica $wrote stored the rating"
		fi
	done
	log "write $round: item $top rated through replica $wrote; left out by replicas $(cd "$work" && ls after.* | sed 's/after\.//' | paste -sd ' ' -)"
done
check ryw "a rating posted through the proxy is left out by every replica's next answer (3 rounds x $replicas replicas, $violations violations)" test "$violations" = 0

# == 3. POST /admin/retrain on any replica reaches the single worker ==================
code=$(http POST /admin/retrain)
run_id=$(jq_py 'd["id"]' 2>/dev/null || true)
check retrain "POST /admin/retrain through the proxy: 202 (replica $(answered_by), run $run_id)" test "$code" = 202
declare -A reporters=()
status=queued
deadline=$((SECONDS + wait_s))
while [[ $status == queued || $status == running ]] && ((SECONDS < deadline)); do
	sleep 1
	[[ $(http GET "/admin/retrain/$run_id") == 200 ]] || continue
	reporter=$(answered_by)
	[[ -z $reporter ]] || reporters[$reporter]=1
	status=$(jq_py 'd["status"]')
done
owner=$(jq_py 'd["owner"] or ""' 2>/dev/null || true)
v2=$(jq_py 'd["model_version_id"] or ""' 2>/dev/null || true)
check retrain "the run finished: $status, version $v2" bash -c '[[ ($1 == activated || $1 == rejected) && -n $2 ]]' _ "$status" "$v2"
check retrain "the worker container (${worker_id:0:12}) ran it (owner $owner)" test "${owner%%:*}" = "${worker_id:0:12}"
check retrain "${#reporters[@]} different replicas reported the run" test "${#reporters[@]}" -ge 2
check retrain "still one worker" test "$(dc ps -q worker | wc -l)" -eq 1

# == 4. bounded load; one replica killed and restarted ===============================
# failover_round N VICTIM: one bounded load through the proxy during which VICTIM is
# killed after 5 s and restarted 7 s later; checks and counts, then the POSTs that
# failed are re-sent and the store must hold each posted rating once.
run_prefix="fo$RANDOM"
total_get=0 total_get_failed=0 total_get_retried=0 total_post=0 total_post_failed=0 total_applied=0
failover_round() {
	local round=$1 victim=$2 victim_name prefix="$run_prefix-r$1-" t_load t_kill t_start t_healthy load_pid
	victim_name=$(name_of "$victim")
	log "round $round: $load_requests requests at $load_rate/s, 8 connections, one in five a POST; $victim_name is killed after 5 s and restarted 7 s later"
	t_load=$(date +%s.%N)
	load load --url "$base" --requests "$load_requests" --rate "$load_rate" --concurrency 8 \
		--post-every 5 --post-user-prefix "$prefix" --seed "$round" --log "$work/load.jsonl" >"$work/load.json" &
	load_pid=$!
	sleep 5
	t_kill=$(date +%s.%N)
	docker kill "$victim" >/dev/null
	sleep 7
	t_start=$(date +%s.%N)
	docker start "$victim" >/dev/null
	local deadline=$((SECONDS + wait_s))
	until [[ $(state_of "$victim") == healthy ]]; do
		((SECONDS < deadline)) || die "$victim_name not healthy again within ${wait_s}s"
		sleep 0.5
	done
	t_healthy=$(date +%s.%N)
	wait "$load_pid" || die "the load generator failed"
	local sent secs rps get_sent get_failed get_retried post_sent post_failed p50 p99
	read -r sent secs rps get_sent get_failed get_retried post_sent post_failed p50 p99 < <(jq_py '" ".join(str(x) for x in (d["requests"], d["seconds"], d["req_per_s"], d["by_method"]["GET"]["sent"], d["by_method"]["GET"]["failed"], d["by_method"]["GET"]["retried_on_a_new_connection"], d["by_method"]["POST"]["sent"], d["by_method"]["POST"]["failed"], d["get_latency"]["p50_ms"], d["get_latency"]["p99_ms"]))' "$work/load.json")
	log "round $round: killed $victim_name $(python3 -c "print(f'{$t_kill - $t_load:.1f}')") s into the load, started it $(python3 -c "print(f'{$t_start - $t_kill:.1f}')") s later, healthy $(python3 -c "print(f'{$t_healthy - $t_start:.1f}')") s after that"
	log "round $round: $sent requests in $secs s ($rps/s); GET $get_sent sent, $get_failed failed (p50 $p50 ms, p99 $p99 ms), $get_retried re-sent by the client on a new connection (an idle keep-alive connection closed by nginx's reload); POST $post_sent sent, $post_failed failed"
	python3 -c 'import json, sys
for f in json.load(open(sys.argv[1]))["failures"]:
    print("[scale] failed:", f["method"], f["path"], f["error"] + ",", "%+.2f s from the kill" % (f["started"] - float(sys.argv[2])))' "$work/load.json" "$t_kill"
	check failover "round $round: GETs through the proxy while a replica was killed and restarted: $get_failed of $get_sent failed (target 0)" test "$get_failed" = 0
	check failover "round $round: the load sent all $load_requests requests" test "$sent" = "$load_requests"
	local back tries=0 seen=0
	back=$(python3 -c 'import json, sys
n = sum(1 for line in open(sys.argv[1]) if (r := json.loads(line))["replica"] == sys.argv[2] and r["started"] > float(sys.argv[3]))
print(n)' "$work/load.jsonl" "${victim:0:12}" "$t_healthy")
	while ((seen == 0 && tries++ < 60)); do
		[[ $(http GET /health/live) == 200 && $(answered_by) == "${victim:0:12}" ]] && seen=1
		((seen == 1)) || sleep 0.25
	done
	check failover "round $round: the restarted replica is back in rotation (it answered $back of the load's requests after it was healthy)" test "$seen" = 1

	# The POSTs that failed: applied or not, re-sending them is safe (an upsert), and
	# afterwards the store holds each posted rating once, with the posted value.
	python3 -c 'import json, sys
for f in json.load(open(sys.argv[1]))["failures"]:
    if f["method"] == "POST":
        print(f["body"])' "$work/load.json" >"$work/failed-posts"
	local applied=0 resent_ok=0 body u code n_failed_posts expected stored mismatch
	while IFS= read -r body; do
		[[ -n $body ]] || continue
		u=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["user_id"])' "$body")
		[[ $(psql_db "SELECT count(*) FROM ratings WHERE user_id = '$u'") == 1 ]] && applied=$((applied + 1))
		code=$(http POST /ratings "$body")
		[[ $code == 200 || $code == 201 ]] && resent_ok=$((resent_ok + 1))
		log "round $round: failed POST $body re-sent: $code ($([[ $code == 200 ]] && echo 'it had been stored before the failure' || echo 'it had not been stored'))"
	done <"$work/failed-posts"
	n_failed_posts=$(grep -c . "$work/failed-posts" || true)
	check failover "round $round: POSTs that failed: $n_failed_posts ($applied of them had been stored); all re-sent successfully" \
		test "$resent_ok" = "$n_failed_posts"
	expected=$(python3 -c 'import json, sys
print(sum(1 for line in open(sys.argv[1]) if json.loads(line)["method"] == "POST"))' "$work/load.jsonl")
	stored=$(psql_db "SELECT count(*) || ' ' || count(DISTINCT (user_id, item_id)) FROM ratings WHERE user_id LIKE '$prefix%'")
	mismatch=$(python3 -c 'import json, sys
want = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["method"] == "POST":
        b = json.loads(r["body"]); want[(b["user_id"], b["item_id"])] = float(b["rating"])
have = {}
for line in sys.stdin:
    u, i, v = line.strip().split("|"); have[(u, i)] = float(v)
print(sum(1 for k, v in want.items() if have.get(k) != v))' "$work/load.jsonl" < <(psql_db "SELECT user_id, item_id, rating FROM ratings WHERE user_id LIKE '$prefix%'"))
	check failover "round $round: the store holds each of the $expected posted ratings once, with the posted value (rows, distinct: $stored; $mismatch differ)" \
		bash -c '[[ $1 == "$2 $2" && $3 == 0 ]]' _ "$stored" "$expected" "$mismatch"
	total_get=$((total_get + get_sent)) total_get_failed=$((total_get_failed + get_failed))
	total_get_retried=$((total_get_retried + get_retried)) total_applied=$((total_applied + applied))
	total_post=$((total_post + post_sent)) total_post_failed=$((total_post_failed + post_failed))
	posted_total=$((posted_total + expected))
}
posted_total=0
for ((round = 1; round <= failover_rounds; round++)); do
	failover_round "$round" "${ids[$(((round) % ${#ids[@]}))]}"
done
log "proxy over the $failover_rounds round(s): $(dc logs --no-color proxy | grep -c 'reloading nginx') reloads; upstream errors: $(dc logs --no-color proxy | grep -oE '(upstream prematurely closed connection|Connection reset by peer|Connection refused|No route to host|timed out)' | sort | uniq -c | tr -s ' ' | paste -sd ',' -)"

# == 5. activation through one replica, and through the CLI ==========================
# measure_switch LABEL VERSION COMMAND...: COMMAND activates VERSION; every replica must
# serve it within the poll interval (+ the load time) of the activation time the
# registry records (set in the activating transaction, so at or before its commit),
# and GET /model must not flip back afterwards.
measure_switch() {
	local label=$1 version=$2 t_act after
	shift 2
	load watch-model --url "$base" --version "$version" --replicas "$replicas" --hold 5 \
		--timeout-total 60 >"$work/switch.json" &
	local watch_pid=$!
	sleep 0.5
	"$@" >/dev/null
	t_act=$(psql_db "SELECT extract(epoch FROM activated_at) FROM model_versions WHERE id = '$version'")
	wait "$watch_pid"
	after=$(python3 -c 'import json, sys
d = json.load(open(sys.argv[1])); t = float(sys.argv[2])
if d["all_switched_at"] is None:
    print("never", d["flips_back"], "-"); raise SystemExit
per = ",".join(f"{r[:12]}:{max(0.0, v - t):.2f}" for r, v in sorted(d["first_new"].items(), key=lambda kv: kv[1]))
print(f"{max(0.0, d['"'"'all_switched_at'"'"'] - t):.2f}", d["flips_back"], per, d["samples_after_all_switched"])' "$work/switch.json" "$t_act")
	read -r all flips per held <<<"$after"
	log "$label: every replica served $version $all s after the activation (replica:seconds $per; poll interval ${poll_s} s); $flips flips back in $held answers after"
	check activate "$label: all $replicas replicas within the poll interval ($all s <= $poll_s s + ${switch_slack_s} s load)" \
		python3 -c "import sys; sys.exit(not ('$all' != 'never' and float('$all') <= $poll_s + $switch_slack_s))"
	check activate "$label: GET /model never flipped back ($flips)" test "$flips" = 0
	echo "$all" >>"$work/switch-times"
}
activate_through_replica() { # ID VERSION: POST /models/VERSION/activate on that replica itself
	exec_py "$1" "import urllib.request as u
u.urlopen(u.Request('http://127.0.0.1:8000/models/$2/activate', method='POST'), timeout=30)"
}
activate_with_cli() { dc exec -T worker rbmrec models activate "$1"; }

if [[ -n $v2 ]]; then
	if [[ $(active_version) != "$v2" ]]; then
		# the retrain kept v1 (candidate rejected): make the newer version active first
		code=$(http POST "/models/$v2/activate")
		check activate "activate the newer $v2 through the proxy: $code" test "$code" = 200
		wait_switched "$v2" || fail activate "every replica serves $v2"
	fi
	measure_switch "older $v1 activated on replica $(name_of "${ids[-1]}")" "$v1" activate_through_replica "${ids[-1]}" "$v1"
	measure_switch "newer $v2 activated with the CLI (rbmrec models activate)" "$v2" activate_with_cli "$v2"
	check activate "the registry's active version is $v2" test "$(active_version)" = "$v2"
else
	fail activate "no second model version to switch between (the retrain produced none)"
fi

# == 6. down and up again with the volumes: nothing lost =============================
before=$(counts)
active_before=$(active_version)
recommend_everywhere "$work/recs-before" || fail down-up "recommendations before down"
dc down -t 20 >/dev/null 2>&1
dc up -d --scale "api=$replicas" --wait >"$work/up.log" 2>&1 || die "up after down failed: $(tail -20 "$work/up.log")"
wait_all_healthy
check down-up "the store is unchanged across down + up: $(counts)" test "$(counts)" = "$before"
check down-up "the active model is still $active_before" test "$(active_version)" = "$active_before"
check down-up "every replica serves $active_before again" wait_switched "$active_before"
if recommend_everywhere "$work/recs-after"; then
	same=1
	ref=$(item_ids "$(ls "$work"/recs-before.* | head -1)")
	for f in "$work"/recs-after.*; do [[ $(item_ids "$f") == "$ref" ]] || same=0; done
	check down-up "every replica answers the same recommendations as before down" test "$same" = 1
else
	fail down-up "recommendations from every replica after up"
fi
check down-up "the $posted_total ratings posted during the failover load are all there" \
	test "$(psql_db "SELECT count(*) FROM ratings WHERE user_id LIKE '$run_prefix-%'")" = "$posted_total"

summary
log "failover over $failover_rounds round(s): GET $total_get_failed of $total_get failed ($total_get_retried re-sent on a new connection by the client); POST $total_post_failed of $total_post failed ($total_applied of them had been stored), all re-sent"
if [[ -f $work/switch-times ]]; then
	log "activation propagation (s): $(paste -sd ' ' "$work/switch-times")"
fi
if ((failures > 0)); then
	log "compose scale smoke: $failures check(s) FAILED"
	exit 1
fi
log "compose scale smoke: OK"
