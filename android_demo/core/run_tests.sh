#!/usr/bin/env bash
# Compile the Java core and its unit tests with javac and run them with JUnit 4 from Debian
# (apt-get install default-jdk-headless junit4): no Gradle, no downloads. --release 8 keeps the
# core to the Java API that Android offers.
# Usage: run_tests.sh [GOLDEN_DIR [TEST_CLASS...]]
#   GOLDEN_DIR: vectors from tests/java_golden.py (without it the golden tests are skipped);
#   TEST_CLASS: e.g. dev.edgeprune.core.GoldenTest (default: every *Test class).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
jars=/usr/share/java/junit4.jar:/usr/share/java/hamcrest-core.jar
for jar in ${jars//:/ }; do
  if [ ! -f "$jar" ]; then
    echo "run_tests.sh: $jar is missing: apt-get install junit4" >&2
    exit 2
  fi
done
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
flags=(--release 8 -encoding UTF-8 -Xlint:all,-options -Werror)
find "$here/src/main/java" -name '*.java' > "$build/main.txt"
find "$here/src/test/java" -name '*.java' > "$build/test.txt"
javac "${flags[@]}" -d "$build/main" @"$build/main.txt"
javac "${flags[@]}" -cp "$build/main:$jars" -d "$build/test" @"$build/test.txt"

golden=${1:-}
shift || true
classes=("$@")
if [ ${#classes[@]} -eq 0 ]; then
  while read -r file; do
    classes+=("$(echo "${file#"$here/src/test/java/"}" | sed 's/\.java$//; s|/|.|g')")
  done < <(grep -l '@Test' $(cat "$build/test.txt") | sort)
fi
exec java -cp "$build/main:$build/test:$jars" -Dedgeprune.golden="$golden" \
  org.junit.runner.JUnitCore "${classes[@]}"
