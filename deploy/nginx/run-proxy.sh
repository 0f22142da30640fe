#!/bin/sh
# run-proxy.sh: the `proxy` service of docker-compose.yml (image nginx:stable).
#
#   sh run-proxy.sh           render the configuration, run nginx, follow the replicas
#   sh run-proxy.sh render    print the rendered configuration and exit
#   sh run-proxy.sh health    exit 0 when GET /health/live answers 200 through nginx
#
# It renders rbmrec.conf.template (beside this script) into the server configuration,
# with client_max_body_size set from RBMREC_MAX_BODY_BYTES, the api's own limit (the
# proxy reads the same env file as the api containers), waits until Docker's DNS
# answers `api`, and runs nginx. Then it looks `api` up every PROXY_RESOLVE_SECONDS
# (default 2) and reloads nginx when the set of replica addresses changes (scaled, a
# replica stopped, killed, restarted with a new address): nginx before 1.27.3 resolves
# the upstream's name only when it loads its configuration. SIGQUIT (the image's stop
# signal: graceful), SIGTERM and SIGINT go to nginx; the script exits with nginx.
# POSIX sh, getent and (for `health`) bash: all in Debian-based nginx images.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
template=$here/rbmrec.conf.template
config=${PROXY_CONFIG_PATH:-/etc/nginx/conf.d/default.conf}
interval=${PROXY_RESOLVE_SECONDS:-2}
upstream=api

log() { echo "run-proxy: $*" >&2; }

render() {
	limit=${RBMREC_MAX_BODY_BYTES-2000000}
	case $limit in
	'' | *[!0-9]* | 0*)
		log "RBMREC_MAX_BODY_BYTES=$limit is not a positive whole number of bytes"
		exit 1
		;;
	esac
	sed "s/@MAX_BODY_BYTES@/$limit/g" "$template"
}

health() {
	# GET /health/live through nginx, so healthy means "serves through the proxy".
	exec timeout 4 bash -c '
		exec 3<>/dev/tcp/127.0.0.1/80 || exit 1
		printf "GET /health/live HTTP/1.0\r\nHost: localhost\r\n\r\n" >&3
		IFS= read -r status <&3 || exit 1
		case $status in "HTTP/1."?" 200 "*) exit 0 ;; esac
		echo "through the proxy: $status" >&2
		exit 1'
}

# The api replicas' addresses, sorted, on one line (empty when none resolves).
replicas() { getent ahostsv4 "$upstream" | awk '{ print $1 }' | sort -u | paste -sd ' ' -; }

case ${1:-run} in
render)
	render
	exit 0
	;;
health) health ;;
run) ;;
*)
	log "usage: run-proxy.sh [run|render|health]"
	exit 2
	;;
esac

if ! awk -v v="$interval" 'BEGIN { exit !(v ~ /^[0-9]+(\.[0-9]+)?$/ && v + 0 > 0) }'; then
	log "PROXY_RESOLVE_SECONDS=$interval is not a positive number of seconds"
	exit 1
fi
render >"$config"
log "client_max_body_size $(sed -n 's/^ *client_max_body_size \([0-9]*\);/\1/p' "$config") bytes"

waited=0
until loaded=$(replicas) && [ -n "$loaded" ]; do
	[ $((waited % 10)) -eq 0 ] && log "waiting for Docker's DNS to answer '$upstream'"
	waited=$((waited + 1))
	sleep 1
done
nginx -t -q
log "api replicas: $loaded"

nginx -g 'daemon off;' &
nginx_pid=$!
trap 'kill -QUIT "$nginx_pid" 2>/dev/null || true' QUIT
trap 'kill -TERM "$nginx_pid" 2>/dev/null || true' TERM INT

gone=
while kill -0 "$nginx_pid" 2>/dev/null; do
	sleep "$interval" &
	wait $! || true # a signal ends the wait early; the loop then sees nginx stop
	now=$(replicas)
	if [ -z "$now" ]; then
		[ -n "$gone" ] || log "no api replica resolves: nginx keeps the last set ($loaded)"
		gone=1
		continue
	fi
	gone=
	if [ "$now" != "$loaded" ] && nginx -t -q; then
		log "api replicas: $now (were: $loaded): reloading nginx"
		kill -HUP "$nginx_pid" 2>/dev/null || true
		loaded=$now
	fi
done

status=0
wait "$nginx_pid" || status=$?
log "nginx exited with status $status"
exit "$status"
