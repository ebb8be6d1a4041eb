#!/bin/bash
# Assembles the demo model's English training corpus from installed Debian packages
# (list, versions and licenses in CORPUS.md) into OUTDIR/corpus.txt and corpus.txt.xz,
# and prints its sha256. Deterministic: file lists come from `dpkg -L`, sorted in the C
# locale, and every filter is fixed (textify.py). Must not download anything or read
# files outside the packages named below. Documents are separated by "\n<|end_of_text|>\n".
#
# usage: tools/train-demo/make_corpus.sh [OUTDIR]   (default: build-d-corpus)
#        --install   first apt-get install the packages (needs root and network)
set -euo pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3
TEXTIFY="$HERE/textify.py"

PACKAGES="fortunes fortunes-min debian-handbook debian-reference-en debian-faq maint-guide
developers-reference debian-policy python3.11-doc postgresql-doc-15 sqlite3-doc manpages manpages-dev
man-db groff-base"

if [ "${1:-}" = "--install" ]; then
    shift
    apt-get update -q
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $PACKAGES
fi
OUT=${1:-build-d-corpus}
mkdir -p "$OUT"
CORPUS="$OUT/corpus.txt"
: >"$CORPUS"
: >"$OUT/corpus.sources.tsv"   # <source> TAB <documents in corpus.txt after it>

for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || {
        echo "make_corpus: package $p is not installed (run with --install)" >&2; exit 1; }
done

files() { # files <package> <extended regex on the path>
    dpkg -L "$1" | grep -E "$2" | while read -r f; do [ -f "$f" ] && [ ! -L "$f" ] && echo "$f"; done | sort
}

add() { # add <label> <count>: report progress; record which documents came from where
    printf '%s\t%s\n' "$1" "$(grep -c '^<|end_of_text|>$' "$CORPUS" || true)" >>"$OUT/corpus.sources.tsv"
    echo "make_corpus: $1: $2 files, corpus now $(wc -c <"$CORPUS") bytes" >&2
}

# 1. Fortune cookies (each cookie one document). ascii-art is pictures, not text.
n=0
for f in $( (files fortunes-min '^/usr/share/games/fortunes/[a-z-]+$'
             files fortunes '^/usr/share/games/fortunes/[a-z-]+$') | sort -u); do
    case "$(basename "$f")" in ascii-art) continue ;; esac
    $PY "$TEXTIFY" fortune "$f" >>"$CORPUS"; n=$((n + 1))
done
add fortunes $n

# 2. Debian books and manuals in HTML (English pages only).
html_pkg() { # html_pkg <package> <regex> [<regex of paths to leave out>]
    local n=0
    for f in $(files "$1" "$2" | grep -vE "${3:-^$}"); do $PY "$TEXTIFY" html "$f" >>"$CORPUS"; n=$((n + 1)); done
    add "$1" $n
}
html_pkg debian-handbook '^/usr/share/doc/debian-handbook/html/en-US/[^/]+\.html$'
html_pkg debian-reference-en '\.en\.html$'
html_pkg debian-faq '/FAQ/[^/]+\.en\.html$'
html_pkg maint-guide '/html/[^/]+\.en\.html$'
html_pkg debian-policy '/policy\.html/[^/]+\.html$'
html_pkg postgresql-doc-15 '/html/[^/]+\.html$'
# Left out: cross-reference indexes, the requirements list (excerpts of the other pages)
# and the change log.
html_pkg sqlite3-doc '^/usr/share/doc/sqlite3/[^/]+\.html$' '/(doc_[a-z_]+|requirements|changes)\.html$'

# 3. reStructuredText sources: Developer's Reference and the Python documentation
#    (prose parts; C API, distutils and "what's new" changelogs left out).
n=0
for f in $(files developers-reference '/_sources/.*\.rst\.txt$'); do
    $PY "$TEXTIFY" rst "$f" >>"$CORPUS"; n=$((n + 1))
done
add developers-reference $n
n=0
for f in $(files python3.11-doc \
        '/html/_sources/(tutorial|library|reference|howto|faq|using|installing|extending)/.*\.rst\.txt$|/html/_sources/glossary\.rst\.txt$'); do
    $PY "$TEXTIFY" rst "$f" >>"$CORPUS"; n=$((n + 1))
done
add python3.11-doc $n

# 4. Linux man-pages: system calls (2), devices (4), file formats (5), overviews (7),
#    rendered by man-db/groff at a very wide width so each paragraph is one line.
n=0
for f in $(files manpages-dev '/man/man2/[^/]+\.2\.gz$') $(files manpages '/man/man[457]/[^/]+\.[457]\.gz$'); do
    # Pages that are only ".so other-page" redirects would duplicate their target.
    zcat "$f" | head -c 4 | grep -q '^\.so' && continue
    MANWIDTH=4000 man --no-hyphenation --no-justification -E UTF-8 -l "$f" 2>/dev/null \
        | col -bx | $PY "$TEXTIFY" man - >>"$CORPUS"
    n=$((n + 1))
done
add manpages $n

xz -9 -T1 -k -f "$CORPUS"
echo "make_corpus: $(grep -c '^<|end_of_text|>$' "$CORPUS") documents, $(wc -c <"$CORPUS") bytes" >&2
sha256sum "$CORPUS" | sed "s|  .*|  corpus.txt|"
