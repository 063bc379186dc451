# Sourced by .ci/run and scripts/test.sh: puts the external tools the tests use on PATH,
# fetching them from Debian's packages when missing. Nothing here starts a service.
tools_dir="${CORTEX_TOOLS_DIR:-$HOME/.cache/cortex-tools}"
if ! command -v promtool >/dev/null 2>&1 && [ ! -x "$tools_dir/usr/bin/promtool" ]; then
  echo "installing promtool into $tools_dir" >&2
  mkdir -p "$tools_dir/deb"
  ( cd "$tools_dir/deb" && { apt-get download prometheus >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get download prometheus >/dev/null; }; } )
  dpkg-deb -x "$tools_dir"/deb/prometheus_*.deb "$tools_dir"
fi
[ -x "$tools_dir/usr/bin/promtool" ] && export PATH="$tools_dir/usr/bin:$PATH"
for tool in jq curl; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "installing $tool" >&2
    apt-get update -qq >/dev/null && apt-get install -y -qq "$tool" >/dev/null
  fi
done
