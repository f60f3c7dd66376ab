#!/usr/bin/env bash
# Registers ticketflow's search attributes on a Temporal namespace, then exits. Run by the one-shot
# `search-attributes` service of docker-compose.yml (temporalio/admin-tools image) with NAME=Type
# arguments; tests/test_compose.py checks those arguments against ticketflow.search.ALL and runs this
# script against a real Temporal dev server.
#
# Idempotent: an attribute that already exists with the same type is left alone; one that exists
# with another type is an error (the workflow's upserts would fail its tasks forever).
#
#   TEMPORAL_ADDRESS=temporal:7233 NAMESPACE=default register-search-attributes.sh TicketStatus=Keyword ...
set -euo pipefail

namespace="${NAMESPACE:-default}"
attempts="${WAIT_ATTEMPTS:-90}"

if [[ $# -eq 0 ]]; then
    echo "usage: $0 NAME=Type [NAME=Type ...]" >&2
    exit 2
fi
for pair in "$@"; do
    if [[ ! "${pair}" =~ ^[A-Za-z_][A-Za-z0-9_]*=[A-Za-z]+$ ]]; then
        echo "bad argument ${pair}: expected NAME=Type" >&2
        exit 2
    fi
done

# auto-setup creates the namespace shortly after the server reports healthy: wait for it.
for ((i = 1; ; i++)); do
    if temporal operator search-attribute list --namespace "${namespace}" >/dev/null 2>&1; then
        break
    fi
    if ((i >= attempts)); then
        echo "namespace ${namespace} not reachable at ${TEMPORAL_ADDRESS:-?} after ${attempts} attempts" >&2
        exit 1
    fi
    echo "waiting for namespace ${namespace} (${i}/${attempts})"
    sleep 2
done

for pair in "$@"; do
    name="${pair%%=*}"
    type="${pair#*=}"
    if out="$(temporal operator search-attribute create --namespace "${namespace}" \
        --name "${name}" --type "${type}" 2>&1)"; then
        echo "registered ${name} (${type})"
    elif grep -qi "different type" <<<"${out}"; then
        echo "${out}" >&2
        exit 1
    elif grep -qi "already exists" <<<"${out}"; then
        # Older servers answer AlreadyExists for a same-type attribute (the CLI checked the type first).
        echo "${name} (${type}) already registered"
    else
        echo "cannot register ${name} (${type}): ${out}" >&2
        exit 1
    fi
done

# Workers upsert these attributes from their first workflow task: return only once the namespace
# lists every one of them (the server's search-attribute cache refreshes asynchronously).
for ((i = 1; ; i++)); do
    listed="$(temporal operator search-attribute list --namespace "${namespace}" 2>/dev/null || true)"
    missing=()
    for pair in "$@"; do
        grep -qw -- "${pair%%=*}" <<<"${listed}" || missing+=("${pair%%=*}")
    done
    if ((${#missing[@]} == 0)); then
        echo "search attributes ready on namespace ${namespace}"
        exit 0
    fi
    if ((i >= attempts)); then
        echo "still not listed after ${attempts} attempts: ${missing[*]}" >&2
        exit 1
    fi
    sleep 2
done
