#!/usr/bin/env bash
# Render `porter diff SOURCE --html` in headless Chromium and save a screenshot of the page.
#
# usage: scripts/screenshot_diff.sh SOURCE [OUT.png] [WIDTH,HEIGHT]
#   SOURCE         what `porter diff` takes: a .py path, a dotted module name, or a recipe
#   OUT.png        the screenshot (default: porter-diff.png)
#   WIDTH,HEIGHT   the browser window in pixels (default: 1600,1200)
#
# Needs Debian's `chromium` (apt-get install chromium). $PYTHON runs porter (default: python3);
# this checkout comes first on PYTHONPATH. The page and the browser profile live in a temporary
# folder that is removed on exit, and the browser is kept off the network: the page has no
# remote assets, and background services and host name lookups are switched off.
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 3 ]; then
    sed -n '4,7p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
source_spec=$1
out=${2:-porter-diff.png}
size=${3:-1600,1200}
browser=${CHROMIUM:-chromium}
if ! command -v "$browser" >/dev/null; then
    echo "screenshot_diff.sh: $browser not found; apt-get install chromium" >&2
    exit 2
fi

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" "${PYTHON:-python3}" -m porter diff "$source_spec" \
    --html "$work/diff.html"

flags=(
    --headless
    --disable-gpu
    --disable-dev-shm-usage
    --disable-background-networking
    --disable-component-update
    --disable-default-apps
    --disable-extensions
    --disable-sync
    --no-first-run
    --hide-scrollbars
    "--host-resolver-rules=MAP * ~NOTFOUND"
    "--user-data-dir=$work/profile"
    "--window-size=$size"
    "--screenshot=$work/shot.png"
)
# Chromium refuses to start as root (as in most containers) unless its sandbox is off.
if [ "$(id -u)" = 0 ]; then
    flags+=(--no-sandbox)
fi
"$browser" "${flags[@]}" "file://$work/diff.html" >"$work/browser.log" 2>&1 || {
    cat "$work/browser.log" >&2
    exit 1
}
if [ ! -s "$work/shot.png" ]; then
    cat "$work/browser.log" >&2
    echo "screenshot_diff.sh: $browser wrote no screenshot" >&2
    exit 1
fi
mv "$work/shot.png" "$out"
echo "$out"
