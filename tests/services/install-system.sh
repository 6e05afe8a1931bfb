#!/usr/bin/env bash
# System packages the integration tests need (sshd for SSH pools; Node.js and npm for Azurite,
# the Azure Blob emulator that prepare.sh installs from npm).
set -euo pipefail
need_apt=()
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
command -v make >/dev/null 2>&1 || need_apt+=(make)
command -v ps >/dev/null 2>&1 || need_apt+=(procps)          # the SSH tests look at remote process groups
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
