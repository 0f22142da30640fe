#!/usr/bin/env bash
# compose-smoke.sh: prove the docker compose deployment end to end, then clean up.
#
#   bash scripts/compose-smoke.sh
#
# Builds the image, starts db -> migrate -> api + worker from empty volumes (timing the
# cold start), seeds MovieLens 100K and trains the first model (the `seed` service),
# asks the api for user 1's recommendations over HTTP, posts a rating and checks that
# the next recommendations exclude the item and changed, restarts api and worker, then
# stops and recreates every container, checking each time that nothing was lost.
#
# Runs under its own compose project (COMPOSE_PROJECT_NAME, default rbmrec-smoke) and
# image tag (APP_IMAGE, default rbmrec:smoke), ignores any .env, and removes its
# containers, volumes and image on exit (SMOKE_KEEP=1 keeps them for a look around).
# Exit status: 0 all checks passed, 1 a check failed, 2 no Docker engine answers.
#
# Environment:
#   MOVIELENS_HOST_DIR   MovieLens 100K directory on this host (default: the tests'
#                        RBMREC_TEST_MOVIELENS_DIR, else the seed downloads the archive)
#   API_PORT             host port of the api on 127.0.0.1 (default 8000, or a free
#                        port when 8000 is taken)
#   SMOKE_WAIT_SECONDS   bound on every wait (default 180)
set -Eeuo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-rbmrec-smoke}
export APP_IMAGE=${APP_IMAGE:-rbmrec:smoke}
export API_BIND=127.0.0.1
wait_s=${SMOKE_WAIT_SECONDS:-180}
keep=${SMOKE_KEEP:-0}
user=1

log() { printf '[smoke %4ss] %s\n' "$SECONDS" "$*"; }
die() {
	log "FAILED: $*" >&2
	exit 1
}
trap 'log "FAILED at line $LINENO: $BASH_COMMAND" >&2' ERR

if ! docker info >/dev/null 2>&1; then
	echo "compose-smoke: no Docker engine answers (docker info failed)" >&2
	exit 2
fi
if ! docker compose version >/dev/null 2>&1; then
	echo "compose-smoke: the docker compose plugin is missing" >&2
	exit 2
fi

work=$(mktemp -d)
# Only what this run sets reaches the containers, not a developer's .env.
cat >"$work/app.env" <<'EOF'
RBMREC_MODEL_POLL_SECONDS=2
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

cleanup() {
	local status=$?
	if [[ $status != 0 ]]; then
		dc ps -a >&2 || true
		dc logs --no-color --tail 40 >&2 || true
	fi
	if [[ $keep == 1 ]]; then
		log "SMOKE_KEEP=1: left running; remove with: docker compose -p $COMPOSE_PROJECT_NAME down -v --rmi local"
	else
		dc down -v --rmi local --remove-orphans -t 10 >/dev/null 2>&1 || true
		# Each service's build leaves an untagged copy of the same image: ours only.
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
		log "port 8000 is taken on this host; publishing the api on $API_PORT"
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
	# An empty directory makes the seed download the official archive.
	mkdir -p "$work/movielens"
	export MOVIELENS_HOST_DIR="$work/movielens"
fi

# -- helpers -------------------------------------------------------------------------
# http METHOD PATH [JSON]: the status code on stdout, the body in $work/body.
http() {
	local args=(-sS --max-time 20 -o "$work/body" -w '%{http_code}' -X "$1")
	if [[ $# -ge 3 ]]; then args+=(-H 'Content-Type: application/json' --data "$3"); fi
	curl "${args[@]}" "$base$2" 2>>"$work/curl.log" || echo 000
}
# expect CODE METHOD PATH [JSON]: fail unless the answer has status CODE.
expect() {
	local want=$1 got
	shift
	got=$(http "$@")
	[[ $got == "$want" ]] || die "$1 $2 answered $got, expected $want: $(head -c 600 "$work/body")"
	log "$1 $2 -> $got"
}
# jq_py EXPR [FILE]: evaluate a Python expression over the JSON document `d`.
jq_py() {
	python3 -c 'import json, sys; d = json.load(open(sys.argv[2])); r = eval(sys.argv[1]); print(r if isinstance(r, str) else json.dumps(r))' "$1" "${2:-$work/body}"
}
container_state() {
	local id
	id=$(dc ps -a -q "$1")
	[[ -n $id ]] || {
		echo missing
		return
	}
	docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$id"
}
wait_healthy() {
	local service=$1 deadline=$((SECONDS + wait_s)) state
	while :; do
		state=$(container_state "$service")
		[[ $state == healthy ]] && return 0
		[[ $state == unhealthy || $state == exited || $state == dead ]] && die "$service is $state"
		((SECONDS < deadline)) || die "$service not healthy after ${wait_s}s (state: $state)"
		sleep 0.5
	done
}
wait_http_200() {
	local deadline=$((SECONDS + wait_s))
	until [[ $(http GET "$1") == 200 ]]; do
		((SECONDS < deadline)) || die "GET $1 never answered 200 within ${wait_s}s"
		sleep 0.25
	done
}
# wait_model VERSION: until the api serves that model version.
wait_model() {
	local deadline=$((SECONDS + wait_s))
	until [[ $(http GET /model) == 200 && $(jq_py 'd["version"]') == "$1" ]]; do
		((SECONDS < deadline)) || die "the api did not load model $1 within ${wait_s}s"
		sleep 0.5
	done
}
# recommend FILE: user 1's top 10 into FILE, checked against the store.
recommend() {
	expect 200 GET "/users/$user/recommendations?n=10"
	cp "$work/body" "$1"
	[[ $(jq_py 'd["strategy"]' "$1") == rbm ]] || die "strategy is not rbm: $(cat "$1")"
	[[ $(jq_py 'd["model_version"]' "$1") == "$version" ]] || die "not served by model $version"
	[[ $(jq_py 'len(d["items"])' "$1") == 10 ]] || die "expected 10 items: $(cat "$1")"
	rated_items >"$work/rated"
	local overlap
	overlap=$(python3 -c 'import json, sys
rated = set(open(sys.argv[2]).read().split())
print(" ".join(i["item_id"] for i in json.load(open(sys.argv[1]))["items"] if i["item_id"] in rated))' "$1" "$work/rated")
	[[ -z $overlap ]] || die "recommended items user $user has rated: $overlap"
}
psql_db() { dc exec -T db psql -U rbmrec -d rbmrec -Atc "$1"; }
rated_items() { psql_db "SELECT item_id FROM ratings WHERE user_id = '$user' ORDER BY item_id"; }
item_ids() { jq_py '" ".join(i["item_id"] for i in d["items"])' "$1"; }
counts() { psql_db "SELECT (SELECT count(*) FROM ratings) || ' ratings, ' || (SELECT count(*) FROM items) || ' items, ' || (SELECT count(*) FROM model_versions) || ' model versions'"; }

# -- 1. build and cold start ---------------------------------------------------------
dc down -v --remove-orphans -t 5 >/dev/null 2>&1 || true
log "project $COMPOSE_PROJECT_NAME, image $APP_IMAGE, api on $base"
start=$SECONDS
dc build --quiet
log "image built in $((SECONDS - start)) s: $(docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$APP_IMAGE")"

t0=$(date +%s.%N)
dc up -d >"$work/up.log" 2>&1 || die "docker compose up failed: $(tail -20 "$work/up.log")"
t_up=$(date +%s.%N)
wait_http_200 /health/live
t_live=$(date +%s.%N)
wait_healthy api
t_healthy=$(date +%s.%N)
log "cold start from empty volumes: 'up -d' returned after $(python3 -c "print(f'{$t_up - $t0:.1f}')") s, /health/live answered after $(python3 -c "print(f'{$t_live - $t0:.1f}')") s, api healthy after $(python3 -c "print(f'{$t_healthy - $t0:.1f}')") s"
[[ $(container_state migrate) == exited ]] || die "migrate did not finish"
[[ $(docker inspect -f '{{.State.ExitCode}}' "$(dc ps -a -q migrate)") == 0 ]] || die "migrate failed"
dc logs --no-color migrate | grep -q "database at revision" || die "migrate did not report a revision"
log "migrate: $(dc logs --no-color migrate | grep -o 'database at revision.*')"
wait_healthy worker
log "worker healthy (reaches the store)"

expect 200 GET /health/ready
log "ready before seeding: $(cat "$work/body")"
expect 200 GET "/users/$user/recommendations?n=5"
[[ $(jq_py 'd["strategy"]') == popular ]] || die "expected the popular fallback without a model"
# api and worker connect as the app role, which may not change the schema
[[ $(psql_db "SELECT rolsuper FROM pg_roles WHERE rolname = 'rbmrec_app'") == f ]] || die "rbmrec_app is missing or a superuser"
users=$(psql_db "SELECT string_agg(DISTINCT usename, ',') FROM pg_stat_activity WHERE datname = 'rbmrec' AND pid <> pg_backend_pid()")
[[ $users == rbmrec_app ]] || die "api and worker should connect as rbmrec_app only, not: $users"
denied=$(dc exec -T -e PGPASSWORD="$(sed -n 's/^POSTGRES_APP_PASSWORD=//p' "$work/compose.env")" db psql -h 127.0.0.1 -U rbmrec_app -d rbmrec -Atc "CREATE TABLE intruder (a int)" 2>&1 || true)
[[ $denied == *"permission denied"* ]] || die "rbmrec_app could create a table: $denied"
log "api and worker connect as rbmrec_app (no superuser, no DDL: ${denied%%$'\n'*})"

# -- 2. seed: import MovieLens 100K, train the first model ---------------------------
start=$SECONDS
if ! dc run --rm -T seed >"$work/seed.log" 2>&1; then
	cat "$work/seed.log" >&2
	die "the seed failed"
fi
grep -vE '^ *(Container|Network|Volume) ' "$work/seed.log" || true
grep -q "trained and activated model version" "$work/seed.log" || die "the seed trained no model"
version=$(grep -oE 'trained and activated model version [^ ]+' "$work/seed.log" | awk '{print $NF}')
log "seeded in $((SECONDS - start)) s: model version $version; store: $(counts)"
wait_model "$version"
log "the api serves model $version without a restart"

# -- 3. recommendations; a new rating is folded in at once ---------------------------
recommend "$work/recs1.json"
log "recommendations for user $user: $(jq_py '[(i["item_id"], i["title"], round(i["predicted_rating"], 2)) for i in d["items"][:3]]' "$work/recs1.json") ..."
top=$(jq_py 'd["items"][0]["item_id"]' "$work/recs1.json")
expect 201 POST /ratings "{\"user_id\": \"$user\", \"item_id\": \"$top\", \"rating\": 5}"
grep -qx "$top" <(rated_items) || die "the posted rating is not in the store"
recommend "$work/recs2.json"
grep -qw -- "$top" <<<"$(item_ids "$work/recs2.json")" && die "item $top still recommended after rating it"
[[ $(item_ids "$work/recs1.json") != "$(item_ids "$work/recs2.json")" ]] || die "recommendations did not change"
log "after rating item $top: it is excluded and the list changed: $(item_ids "$work/recs2.json")"
before=$(counts)

# -- 4. restart api and worker: nothing lost -----------------------------------------
dc stop -t 20 api worker >/dev/null 2>&1
for service in api worker; do
	# 137 would mean SIGKILL after the grace period: SIGTERM did not reach the process.
	code=$(docker inspect -f '{{.State.ExitCode}}' "$(dc ps -a -q "$service")")
	[[ $code == 0 ]] || die "$service exited with $code on SIGTERM"
done
dc start api worker >/dev/null 2>&1
wait_healthy api
wait_model "$version"
wait_healthy worker
[[ $(counts) == "$before" ]] || die "store changed across the restart: $before -> $(counts)"
recommend "$work/recs3.json"
[[ $(item_ids "$work/recs3.json") == "$(item_ids "$work/recs2.json")" ]] || die "recommendations differ after the restart"
expect 200 POST /ratings "{\"user_id\": \"$user\", \"item_id\": \"$top\", \"rating\": 5}"
log "after restarting api and worker (both stopped cleanly on SIGTERM): same model, same store ($before), same recommendations; re-posting the rating replaced it (200)"

# -- 5. recreate every container (volumes kept): nothing lost ------------------------
dc down -t 20 >/dev/null 2>&1
dc up -d >"$work/up.log" 2>&1 || die "docker compose up failed: $(tail -20 "$work/up.log")"
wait_healthy api
wait_model "$version"
[[ $(counts) == "$before" ]] || die "store changed across down/up: $before -> $(counts)"
recommend "$work/recs4.json"
[[ $(item_ids "$work/recs4.json") == "$(item_ids "$work/recs2.json")" ]] || die "recommendations differ after down/up"
dc exec -T api test -d "/var/lib/rbmrec/models/$version" || die "artifact $version is not on the models volume"
inside=$(dc exec -T worker python -c "import urllib.request; print(urllib.request.urlopen('http://api:8000/health/ready', timeout=5).status)")
[[ $inside == 200 ]] || die "api:8000 did not answer inside the compose network"
log "after down + up (volumes kept): same model, same store, same recommendations; api:8000 answers inside the network"

log "compose smoke: OK"
