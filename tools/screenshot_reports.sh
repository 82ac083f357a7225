#!/usr/bin/env bash
# Screenshots of the two report pages a bench engineer reads, taken with headless Chromium.
#
#   tools/screenshot_reports.sh [OUT_DIR]        (default: ./screenshots)
#
# Writes OUT_DIR/run/ (the default `itb run`, simulated NE-1000 over a pty) and
# OUT_DIR/accuracy/ (`itb hil accuracy` on a simulated pump and balance), then
# OUT_DIR/run-report.png and OUT_DIR/accuracy-report.png, full pages at 1280 px wide.
# Needs Debian's chromium (`apt-get install chromium`) and the venv (`make .venv/.itb-installed`).
# Chromium runs with no network use of its own (this script loads local files only).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-screenshots}
ITB=${ITB:-.venv/bin/itb}
CHROMIUM=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
if [[ -z "$CHROMIUM" ]]; then
    echo "screenshot_reports.sh: chromium not found (apt-get install chromium)" >&2
    exit 4
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

"$ITB" -q run --report "$OUT/run" --no-progress >/dev/null
"$ITB" -q hil accuracy --pump sim --balance sim:mtsics --rate 1.2mL/h --syringe 14.5mm --bias-pct 3 --limit-pct 5 \
    --report "$OUT/accuracy" >/dev/null

PROFILE=$(mktemp -d)
trap 'rm -rf "$PROFILE"' EXIT
shoot() {  # shoot PAGE PNG HEIGHT_PX
    "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --hide-scrollbars --user-data-dir="$PROFILE" --window-size="1280,$3" \
        --screenshot="$2" "file://$1" 2>/dev/null
    echo "$2"
}
shoot "$OUT/run/report.html" "$OUT/run-report.png" 6400
shoot "$OUT/accuracy/report.html" "$OUT/accuracy-report.png" 2600
