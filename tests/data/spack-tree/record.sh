#!/usr/bin/env bash
# Re-record this folder from a site made by ci/spack-site.sh (see README.md).
# Copies the database and the module trees, then makes them portable: the site's absolute
# prefix becomes @SITE@, and the project address Spack writes into each modulefile's header
# comment becomes @SPACK_URL@ (this repository names no code-hosting site).
set -euo pipefail

SITE=${ENVMOD_SPACK_SITE:-/opt/envmod-spack-site}
HERE=$(cd "$(dirname "$0")" && pwd)

[ -f "$SITE/opt/.spack-db/index.json" ] || { echo "no Spack database under $SITE/opt" >&2; exit 1; }

rm -rf "$HERE/opt" "$HERE/modules"
mkdir -p "$HERE/opt/.spack-db" "$HERE/modules"
cp "$SITE/opt/.spack-db/index.json" "$SITE/opt/.spack-db/index_verifier" "$HERE/opt/.spack-db/"
for kind in lmod tcl; do
    cp -r "$SITE/modules/$kind" "$HERE/modules/$kind"
done

# '|' as the sed delimiter: both patterns are paths or addresses full of '/'
find "$HERE/opt" "$HERE/modules" -type f -print0 | xargs -0 sed -i \
    -e "s|$SITE|@SITE@|g" \
    -e 's|(https\?://[^)]*/spack/spack)|(@SPACK_URL@)|'

# nothing machine-specific may remain
if grep -rIl -e "$SITE" -e 'https\?://' "$HERE/opt" "$HERE/modules"; then
    echo "record.sh: the files above still hold a machine path or an address" >&2
    exit 1
fi
find "$HERE/opt" "$HERE/modules" -type f | sort
