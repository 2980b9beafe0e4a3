#!/usr/bin/env bash
# Fetch the raw material of the offline PocketBEIR benchmark into $LAMRA_HOME/sources (idempotent).
#
#   emoji-datasource-google 16.0.0  (npm, Apache-2.0)  -> sources/emoji-datasource-google/
#   emoji-datasource-twitter 16.0.0 (npm, CC-BY 4.0)   -> sources/emoji-datasource-twitter/
#   emojibase-data 17.0.0           (npm, MIT)         -> sources/emojibase-data/
#   WordNet 3.0                     (Debian wordnet-base, WordNet licence) -> sources/wordnet/
#
# Only emoji.json, the 64px PNGs, en/data.json, the licence files and WordNet's data.* / index.*
# files are kept. Re-running does nothing when everything is already there.
set -euo pipefail

LAMRA_HOME="${LAMRA_HOME:-$HOME/.cache/lamra}"
SOURCES="${1:-$LAMRA_HOME/sources}"
mkdir -p "$SOURCES"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

fetch_npm() {  # fetch_npm NAME VERSION MARKER_FILE TAR_PATTERNS...
    local name="$1" version="$2" marker="$3"; shift 3
    local dest="$SOURCES/$name"
    if [[ -f "$dest/.version" && "$(cat "$dest/.version")" == "$version" && -e "$dest/$marker" ]]; then
        echo "ok: $name $version already in $dest"
        return
    fi
    echo "fetching $name@$version"
    (cd "$TMP" && npm pack --silent "$name@$version" >/dev/null)
    local tarball
    tarball="$(ls "$TMP"/*"$version".tgz | head -n1)"
    rm -rf "$dest.partial"
    mkdir -p "$dest.partial"
    tar -xzf "$tarball" -C "$dest.partial" --strip-components=1 --wildcards "$@"
    echo "$version" > "$dest.partial/.version"
    rm -rf "$dest"
    mv "$dest.partial" "$dest"
    rm -f "$tarball"
    echo "ok: $name $version -> $dest"
}

fetch_npm emoji-datasource-google 16.0.0 emoji.json \
    'package/emoji.json' 'package/package.json' 'package/LICENSE*' 'package/README.md' 'package/img/google/64/*'
fetch_npm emoji-datasource-twitter 16.0.0 emoji.json \
    'package/emoji.json' 'package/package.json' 'package/LICENSE*' 'package/README.md' 'package/img/twitter/64/*'
fetch_npm emojibase-data 17.0.0 en/data.json \
    'package/en/data.json' 'package/package.json' 'package/LICENSE*' 'package/README.md'

# WordNet 3.0: prefer the installed Debian package; as root install it; otherwise unpack the .deb.
WN="$SOURCES/wordnet"
if [[ -f "$WN/data.noun" && -f "$WN/data.verb" && -f "$WN/data.adj" && -f "$WN/data.adv" ]]; then
    echo "ok: WordNet already in $WN"
else
    if ! dpkg -s wordnet-base >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wordnet-base
    fi
    src=""
    if dpkg -s wordnet-base >/dev/null 2>&1; then
        src="$(dirname "$(dpkg -L wordnet-base | grep -E '/data\.noun$' | head -n1)")"
    else
        (cd "$TMP" && apt-get download wordnet-base >/dev/null)
        dpkg-deb -x "$TMP"/wordnet-base_*.deb "$TMP/deb"
        src="$(dirname "$(find "$TMP/deb" -name data.noun | head -n1)")"
    fi
    rm -rf "$WN.partial" && mkdir -p "$WN.partial"
    cp "$src"/data.noun "$src"/data.verb "$src"/data.adj "$src"/data.adv "$WN.partial/"
    cp "$src"/index.noun "$src"/index.verb "$src"/index.adj "$src"/index.adv "$WN.partial/" 2>/dev/null || true
    for doc in /usr/share/doc/wordnet-base/copyright "$TMP"/deb/usr/share/doc/wordnet-base/copyright; do
        [[ -f "$doc" ]] && cp "$doc" "$WN.partial/LICENSE" && break
    done
    echo "3.0" > "$WN.partial/.version"
    rm -rf "$WN" && mv "$WN.partial" "$WN"
    echo "ok: WordNet 3.0 -> $WN"
fi
echo "sources ready in $SOURCES"
