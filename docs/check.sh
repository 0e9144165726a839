#!/usr/bin/env bash
# Checks the book against the code, then builds it. Run from anywhere:
#
#     docs/check.sh            # static checks + `mdbook build docs`
#     docs/check.sh --no-build # static checks only (no mdbook needed)
#
# The Rust blocks themselves are doctests of the `kiln` crate (src/lib.rs,
# `mod book`), run by `cargo test --workspace`. This script checks what
# rustdoc cannot see:
#   1. SUMMARY.md lists every chapter file and every entry exists;
#   2. every chapter is registered in src/lib.rs, so its Rust blocks run;
#   3. every code fence says its language, and a Rust block that pulls code
#      in with {{#include}} is marked `ignore` (the included file is built
#      and run on its own);
#   4. every {{#include file:anchor}} names an existing file and anchor
#      (mdbook itself silently inserts nothing for a missing anchor);
#   5. every repository path written in backticks (`tensor/src/layout.rs`)
#      exists, so the book cannot point at code that moved; a line that
#      contains TODO(lead) is exempt (it names work still to land);
#   6. every link to another chapter (`[x](autodiff.md#the-trace)`) names an
#      existing chapter and, after `#`, one of its headings;
#   7. a block introduced by <!-- verbatim: PATH --> (in a chapter or the
#      README) is quoted from PATH:
#      each of its lines must occur in that file (blank lines and elisions,
#      a line that is just "…" or "// …", are skipped);
#   8. every figure a chapter shows (`![…](figures/x.svg)`) exists, and
#      every figures/*.dot has its rendered .svg beside it (docs/figures.sh
#      renders them; tests/book_figures.rs checks each .dot is current);
#   9. `mdbook build` reports no error or warning.
set -euo pipefail
cd "$(dirname "$0")/.."
src=docs/src
fail=0
err() {
    echo "docs/check.sh: $*" >&2
    fail=1
}

# 7: verbatim quotes in a markdown file (a chapter, or the README).
verbatim() {
    local md=$1
    awk '
        /<!-- verbatim: / { path = $0; sub(/.*<!-- verbatim: /, "", path); sub(/ -->.*/, "", path); want = 1; next }
        want && /^[ \t]*```/ { if (inblock) { want = 0; inblock = 0 } else { inblock = 1 }; next }
        want && inblock {
            line = $0; gsub(/^[ \t]+|[ \t]+$/, "", line)
            # blank lines and elisions ("…", "// …") are not quoted text
            if (line != "" && line !~ /^(\/\/ )?(…|\.\.\.)$/) print path "\t" line
        }
    ' "$md" | while IFS=$'\t' read -r path line; do
        if [ ! -f "$path" ]; then
            echo "docs/check.sh: $md: verbatim source $path does not exist" >&2
            echo x
        elif ! grep -qF -- "$line" "$path"; then
            echo "docs/check.sh: $md: quoted line not found in $path: $line" >&2
            echo x
        fi
    done | grep x >/dev/null && fail=1
    return 0
}

chapters=$(cd "$src" && ls -- *.md | grep -v '^SUMMARY\.md$')

# The ids mdBook gives a chapter's headings (outside code blocks): lower
# case, punctuation dropped, spaces turned into dashes.
slugs() {
    awk '/^[ \t]*```/ { code = !code; next } !code && /^#+ / { sub(/^#+ /, ""); print }' "$1" |
        tr 'A-Z' 'a-z' | sed 's/[^a-z0-9 _-]//g; s/ /-/g'
}

# 1 and 2: the chapter list, in SUMMARY.md and in src/lib.rs.
for f in $chapters; do
    grep -q "($f)" "$src/SUMMARY.md" || err "$src/$f is not listed in $src/SUMMARY.md"
    grep -q "=> \"$f\"" src/lib.rs || err "$src/$f is not registered in src/lib.rs (mod book), so its Rust blocks are not tested"
done
for f in $(grep -o '([a-z0-9_-]*\.md)' "$src/SUMMARY.md" | tr -d '()'); do
    [ -f "$src/$f" ] || err "$src/SUMMARY.md links to missing $f"
done

for f in $chapters; do
    md="$src/$f"
    # 3: fences. Prints "line<TAB>problem" for each bad block.
    awk -v file="$md" '
        /^[ \t]*```/ {
            if (!open) {
                open = 1; start = NR; info = $0
                sub(/^[ \t]*```/, "", info); gsub(/[ \t]/, "", info)
                if (info == "") print file ":" NR ": code fence without a language (rustdoc would compile it as Rust; use text, sh, …)"
                is_rust = (info ~ /^rust/); has_include = 0
            } else {
                if (is_rust && has_include && info !~ /ignore/) print file ":" start ": a rust block with {{#include}} must be rust,ignore"
                open = 0
            }
            next
        }
        open && /\{\{#(rustdoc_)?include/ { has_include = 1 }
    ' "$md" | while IFS= read -r line; do echo "docs/check.sh: $line" >&2; echo x; done | grep x >/dev/null && fail=1

    # 4: includes (an escaped \{{#include}} is prose, not a directive).
    while IFS= read -r inc; do
        spec=${inc#*include }
        spec=${spec%\}\}}
        path=${spec%%:*}
        anchor=""
        [ "$spec" != "$path" ] && anchor=${spec#*:}
        target="$src/$path"
        if [ ! -f "$target" ]; then
            err "$md: {{#include $spec}}: no file $target"
            continue
        fi
        if [ -n "$anchor" ] && ! [[ $anchor =~ ^[0-9:]*$ ]]; then
            grep -q "ANCHOR: $anchor\$" "$target" && grep -q "ANCHOR_END: $anchor\$" "$target" ||
                err "$md: {{#include $spec}}: no ANCHOR/ANCHOR_END '$anchor' in $target"
        fi
    done < <(grep -o '\\\?{{#\(rustdoc_\)\?include [^}]*}}' "$md" | grep -v '^\\' || true)

    # 5: repository paths in backticks.
    while IFS= read -r p; do
        case "$p" in *'{'* | *'*'* | *'…'* | *'<'*) continue ;; esac
        [ -e "$p" ] || err "$md: \`$p\` does not exist in the repository"
    done < <(grep -v 'TODO(lead)' "$md" |
        grep -o '`\(\.ci\|tensor\|autograd\|nn\|models\|src\|examples\|benches\|scripts\|fixtures\|data\|docs\|tests\)/[^` ]*`' |
        tr -d '`' | sort -u || true)

    # 6: links to chapters, and to headings in them.
    while IFS= read -r link; do
        target=${link%%#*}
        if [ ! -f "$src/$target" ]; then
            err "$md: link to missing chapter $target"
        elif [ "$target" != "$link" ] && ! slugs "$src/$target" | grep -qx "${link#*#}"; then
            err "$md: link to $link: $target has no heading with that id"
        fi
    done < <(grep -o '](\([a-z0-9_-]*\.md\)\(#[a-z0-9_-]*\)\?)' "$md" | sed 's/^](//; s/)$//' || true)

    verbatim "$md"

    # 8: figures shown by the chapter.
    while IFS= read -r img; do
        [ -f "$src/$img" ] || err "$md: figure $img does not exist in $src/"
    done < <(grep -o '!\[[^]]*\]([^)]*)' "$md" | sed 's/.*](//; s/)$//' || true)
done

for dotfile in "$src"/figures/*.dot; do
    [ -e "$dotfile" ] || continue
    [ -f "${dotfile%.dot}.svg" ] || err "$dotfile has no rendered ${dotfile%.dot}.svg (run docs/figures.sh)"
done

verbatim README.md

[ "$fail" = 0 ] || { echo "docs/check.sh: the book is out of step with the code" >&2; exit 1; }
echo "docs/check.sh: static checks passed ($(echo "$chapters" | wc -w) chapters)"

# 9: build the HTML; mdbook exits 0 even when an include fails, so read its log.
if [ "${1:-}" != "--no-build" ]; then
    log=$(mdbook build docs 2>&1) || { echo "$log" >&2; exit 1; }
    if echo "$log" | grep -E '(ERROR|WARN)'; then
        echo "docs/check.sh: mdbook build reported problems (above)" >&2
        exit 1
    fi
    echo "docs/check.sh: book built in docs/book/"
fi
