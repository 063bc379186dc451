# Sourced by .ci/run and scripts/test.sh: puts the external tools the tests use on PATH (tmux: the
# `cortex top` tests drive it in a real terminal),
# fetching them from Debian's packages when missing. Nothing here starts a service.
tools_dir="${CORTEX_TOOLS_DIR:-$HOME/.cache/cortex-tools}"
if ! command -v promtool >/dev/null 2>&1 && [ ! -x "$tools_dir/usr/bin/promtool" ]; then
  echo "installing promtool into $tools_dir" >&2
  mkdir -p "$tools_dir/deb"
  ( cd "$tools_dir/deb" && { apt-get download prometheus >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get download prometheus >/dev/null; }; } )
  dpkg-deb -x "$tools_dir"/deb/prometheus_*.deb "$tools_dir"
fi
[ -x "$tools_dir/usr/bin/promtool" ] && export PATH="$tools_dir/usr/bin:$PATH"
for tool in jq curl tmux; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "installing $tool" >&2
    apt-get update -qq >/dev/null && apt-get install -y -qq "$tool" >/dev/null
  fi
done
# Slurm (slurmctld, slurmd, slurm-client: 22.05 on bookworm) for the Slurm executor's tests, which
# start their own single-node cluster on loopback (scripts/slurm-dev.sh). The packages' maintainer
# scripts would start munge and the Slurm daemons and enable them at boot: a policy-rc.d refusing
# every start (placed only if the host has none, removed after) covers invoke-rc.d and
# deb-systemd-invoke, and the units are disabled again, so nothing runs or starts machine-wide.
# munge is installed as a dependency but not used (the dev cluster runs auth/none).
if ! command -v slurmctld >/dev/null 2>&1 || ! command -v slurmd >/dev/null 2>&1 \
  || ! command -v sbatch >/dev/null 2>&1; then
  echo "installing slurmctld slurmd slurm-client (no service started)" >&2
  slurm_policy_placed=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
    slurm_policy_placed=1
  fi
  slurm_install() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      slurmctld slurmd slurm-client >/dev/null
  }
  slurm_install 2>/dev/null || { apt-get update -qq >/dev/null && slurm_install; }
  if [ -n "$slurm_policy_placed" ]; then rm -f /usr/sbin/policy-rc.d; fi
  for unit in slurmctld slurmd munge; do
    deb-systemd-helper disable "$unit.service" >/dev/null 2>&1 || true
    update-rc.d "$unit" disable >/dev/null 2>&1 || true
  done
  unset -f slurm_install
  unset slurm_policy_placed
fi
# Chromium and its WebDriver (chromedriver) for the dashboard's browser tests (tests/browser),
# which start their own headless Chromium (--no-sandbox: the tests run as root) per test.
# --no-install-recommends keeps out the desktop extras; nothing here starts a service.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  echo "installing chromium chromium-driver" >&2
  chromium_install() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      chromium chromium-driver >/dev/null
  }
  chromium_install 2>/dev/null || { apt-get update -qq >/dev/null && chromium_install; }
  unset -f chromium_install
fi
