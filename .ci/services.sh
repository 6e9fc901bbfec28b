#!/usr/bin/env bash
# Services the queue tests drive for real: Debian's chromium + chromium-driver (the browser test) and
# PostgreSQL (the database test; its fixture starts a server of its own on 127.0.0.1 in a temp folder).
# Idempotent and quiet: installs only what is missing, and never fails by itself: those tests then skip,
# naming what is missing, except under CI=true, where a missing service fails them.
set -uo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
[ ${#need[@]} -eq 0 ] && exit 0
sudo=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo=(sudo -n)
    else
        echo "services.sh: not root; missing ${need[*]} (the tests that need them will skip; under CI they fail)" >&2
        exit 0
    fi
fi
export DEBIAN_FRONTEND=noninteractive
if ! { "${sudo[@]}" apt-get update -qq && "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}"; } \
    >/tmp/ximgctx-services.log 2>&1; then
    echo "services.sh: could not install ${need[*]} (see /tmp/ximgctx-services.log); those tests will skip" >&2
fi
exit 0
