#!/usr/bin/env bash
# Builds the test authorization server (Spring Authorization Server, from Maven Central) once into
#   $HGW_OAUTH2_AS_HOME (default ${XDG_CACHE_HOME:-$HOME/.cache}/hgw-oauth2-as/<stamp>)/hgw-oauth2-as.jar
# Needs mvn and a JDK >= 17. Idempotent: does nothing when the cache matches this folder. Prints the jar's path.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
STAMP=$(cat "$HERE/pom.xml" "$HERE/setup.sh" $(find "$HERE/src" -type f | sort) | sha256sum | cut -c1-16)
AS_HOME=${HGW_OAUTH2_AS_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/hgw-oauth2-as/$STAMP}
JAR="$AS_HOME/hgw-oauth2-as.jar"
if [ -f "$JAR" ]; then
    echo "$JAR"
    exit 0
fi

echo "setup.sh: building the test authorization server into $AS_HOME" >&2
rm -rf "$AS_HOME/build"
mkdir -p "$AS_HOME/build"
cp -r "$HERE/pom.xml" "$HERE/src" "$AS_HOME/build/"
if ! (cd "$AS_HOME/build" && mvn -B package -DskipTests) > "$AS_HOME/mvn.log" 2>&1; then
    grep -E 'ERROR|BUILD' "$AS_HOME/mvn.log" | head -20 >&2
    echo "setup.sh: maven failed; full log in $AS_HOME/mvn.log" >&2
    exit 1
fi
cp "$AS_HOME/build/target/hgw-oauth2-as.jar" "$JAR.tmp"
mv "$JAR.tmp" "$JAR"
rm -rf "$AS_HOME/build"
echo "$JAR"
