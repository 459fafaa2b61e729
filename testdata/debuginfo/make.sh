#!/bin/sh
# Rebuilds the symbolizer's separate-debug-info fixtures (committed, so the
# tests need no compiler): libdebuglink.so, stripped, with a build id and a
# .gnu_debuglink to libdebuglink.debug; libmini.so, stripped, with
# MiniDebugInfo (.gnu_debugdata) built as gdb's manual shows.
set -eu
cd "$(dirname "$0")"
t=$(mktemp -d)
gcc -O1 -g -shared -fPIC -Wl,--build-id -o "$t/libfull.so" fixture.c
cp "$t/libfull.so" libdebuglink.so
objcopy --only-keep-debug "$t/libfull.so" libdebuglink.debug
strip --strip-all libdebuglink.so
objcopy --add-gnu-debuglink=libdebuglink.debug libdebuglink.so
cp "$t/libfull.so" libmini.so
nm -D "$t/libfull.so" --format=posix --defined-only | awk '{ print $1 }' | sort > "$t/dynsyms"
nm "$t/libfull.so" --format=posix --defined-only | awk '{ if ($2 == "T" || $2 == "t") print $1 }' | sort > "$t/funcsyms"
comm -13 "$t/dynsyms" "$t/funcsyms" > "$t/keep"
objcopy --only-keep-debug "$t/libfull.so" "$t/mini"
objcopy -S --remove-section .gdb_index --remove-section .comment --keep-symbols="$t/keep" "$t/mini"
xz -f "$t/mini"
strip --strip-all libmini.so
objcopy --add-section .gnu_debugdata="$t/mini.xz" libmini.so
rm -r "$t"
