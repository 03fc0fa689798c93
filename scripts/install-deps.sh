#!/usr/bin/env bash
# Installs what Latchkey's tests start for real (STYLE.md rule 15): a
# redis-server binary, a Chromium, Node.js with npm (the TypeScript client's
# test), and the distribution's nats-server (Debian
# 12 ships 2.9, older than Latchkey needs: the tests of the start-up version
# check run it; every other test uses the embedded nats-server go.mod pins).
# Idempotent: does nothing when all are already there. Debian/Ubuntu (apt-get)
# only. Never starts a service; the redis-server and nats-server packages may
# start their own daemons on 6379 and 4222, which Latchkey's tests never use
# (they run private servers on random ports).
set -euo pipefail

log() { printf 'install-deps: %s\n' "$*"; }

# as_root runs a command as root: directly, or through sudo when available.
as_root() {
	if [[ $(id -u) -eq 0 ]]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo "$@"
	else
		log "need root to run: $* (no sudo found); rerun as root" >&2
		exit 1
	fi
}

have_chromium() {
	if [[ -n ${LATCHKEY_CHROMIUM_PATH:-} && -x ${LATCHKEY_CHROMIUM_PATH} ]]; then
		return 0
	fi
	local name
	for name in chromium chromium-browser google-chrome google-chrome-stable; do
		command -v "$name" >/dev/null 2>&1 && return 0
	done
	return 1
}

# have_nats_server: on PATH, or where Debian's package puts it (/usr/sbin, off a
# normal user's PATH).
have_nats_server() {
	command -v nats-server >/dev/null 2>&1 || [[ -x /usr/sbin/nats-server ]]
}

packages=()
if command -v redis-server >/dev/null 2>&1; then
	log "redis-server present: $(command -v redis-server)"
else
	log "redis-server missing: will install package redis-server"
	packages+=(redis-server)
fi
if have_chromium; then
	log "chromium present"
else
	log "chromium missing: will install packages chromium fonts-liberation"
	packages+=(chromium fonts-liberation)
fi

if have_nats_server; then
	log "nats-server present"
else
	log "nats-server missing: will install package nats-server"
	packages+=(nats-server)
fi

# Node.js and npm build and run the TypeScript client's test (clients/typescript).
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
	log "node present: $(node --version)"
else
	log "node or npm missing: will install packages nodejs npm"
	packages+=(nodejs npm)
fi

if [[ ${#packages[@]} -eq 0 ]]; then
	log "nothing to do"
	exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
	log "apt-get not found; install these yourself: ${packages[*]}" >&2
	exit 1
fi

export DEBIAN_FRONTEND=noninteractive
log "apt-get update"
as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
log "apt-get install ${packages[*]}"
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}"

for cmd in redis-server; do
	command -v "$cmd" >/dev/null 2>&1 || { log "$cmd still missing after install" >&2; exit 1; }
done
have_chromium || { log "chromium still missing after install" >&2; exit 1; }
have_nats_server || { log "nats-server still missing after install" >&2; exit 1; }
log "done: installed ${packages[*]}"
