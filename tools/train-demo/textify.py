#!/usr/bin/python3
# Turns one source document (HTML, reStructuredText, rendered man page, fortune file)
# into plain prose paragraphs for the demo-model corpus. Called by make_corpus.sh.
# Owns only text extraction: no file discovery, no ordering, no randomness (the output
# must depend on the input bytes alone, so the corpus is reproducible).
# Python standard library only, so it runs with Debian's /usr/bin/python3.
import html.parser
import re
import sys

DOC_SEP = "\n<|end_of_text|>\n"

# Blocks dropped from HTML: navigation, code listings, terminal screens, tables of contents.
SKIP_TAGS = {"head", "script", "style", "pre", "table"}
SKIP_CLASSES = {"navheader", "navfooter", "toc", "screen", "programlisting", "indexterm",
                "footnotes", "sphinxsidebar", "related", "footer", "headerlink", "list-of-tables"}
BLOCK_TAGS = {"p", "div", "li", "dt", "dd", "h1", "h2", "h3", "h4", "h5", "h6", "br", "tr",
              "blockquote", "section", "title", "ul", "ol", "dl"}


class _HtmlText(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack = []     # (tag, skipping) for open elements that can nest
        self.skip = 0       # depth of skipped elements we are inside
        self.paras = []
        self.cur = []

    def _flush(self):
        text = " ".join("".join(self.cur).split())
        if text:
            self.paras.append(text)
        self.cur = []

    def handle_starttag(self, tag, attrs):
        if tag in ("br", "img", "meta", "link", "hr", "input"):
            if tag == "br" and not self.skip:
                self._flush()
            return
        cls = set((dict(attrs).get("class") or "").split())
        skipping = tag in SKIP_TAGS or bool(cls & SKIP_CLASSES)
        self.stack.append((tag, skipping))
        if skipping:
            self.skip += 1
        if tag in BLOCK_TAGS and not self.skip:
            self._flush()

    def handle_endtag(self, tag):
        # Pop to the matching tag; tolerates unclosed <p>/<li> in sloppy HTML.
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                for _, skipping in self.stack[i:]:
                    if skipping:
                        self.skip -= 1
                del self.stack[i:]
                break
        if tag in BLOCK_TAGS and not self.skip:
            self._flush()

    def handle_data(self, data):
        if not self.skip:
            self.cur.append(data)


def html_paras(text):
    p = _HtmlText()
    p.feed(text)
    p.close()
    p._flush()
    return p.paras


RST_ROLE = re.compile(r":[a-z:]+:`[~!]?([^`<]*?)(?:\s*<[^>]*>)?`")


def rst_paras(text):
    """Paragraphs of an .rst source: directives, literal blocks and markup dropped."""
    paras, cur = [], []
    lines = text.split("\n")
    i, literal_indent = 0, None
    prev_literal_intro = False
    while i < len(lines):
        line = lines[i].rstrip()
        i += 1
        indent = len(line) - len(line.lstrip())
        if literal_indent is not None:
            if not line or indent > literal_indent:
                continue
            literal_indent = None
        if not line:
            if cur:
                paras.append(" ".join(cur))
                cur = []
            continue
        if line.lstrip().startswith(".. ") or line.lstrip() == "..":
            # Directive: skip it and its indented body.
            literal_indent = indent
            if cur:
                paras.append(" ".join(cur))
                cur = []
            continue
        if re.fullmatch(r"([=\-~^\"'`#*+_.:])\1{2,}", line.strip()):
            continue  # section underline
        if line.lstrip().startswith((">>>", "...", "$ ", "|")):
            continue  # interactive session or line block
        if prev_literal_intro and indent > 0:
            literal_indent = 0 if not cur else indent - 1
            continue
        if line.endswith("::"):
            line = line[:-1]
            prev_literal_intro = True
        else:
            prev_literal_intro = False
        cur.append(line.strip())
    if cur:
        paras.append(" ".join(cur))
    out = []
    for p in paras:
        p = RST_ROLE.sub(r"\1", p)
        p = p.replace("``", "").replace("**", "").replace("`_", "").replace("`", "")
        p = re.sub(r"\\(.)", r"\1", p)
        p = " ".join(p.split())
        if p.endswith(":") and p[:-1].endswith(":"):
            p = p[:-1]
        out.append(p)
    return out


def man_paras(text):
    """Paragraphs of a man page rendered with a very wide MANWIDTH (one line each)."""
    out = []
    for line in text.split("\n"):
        s = " ".join(line.split())
        if not s:
            continue
        # Header and footer lines: "name(7) ... name(7)" and "Linux man-pages 6.03 date name(7)".
        if re.fullmatch(r"\S+\(\d\w*\)\s.*\s\S+\(\d\w*\)", s):
            continue
        out.append(s)
    return out


def fortune_docs(text):
    """Each cookie of a strfile-format fortune file is its own document."""
    docs = []
    for cookie in re.split(r"\n%\n", "\n" + text + "\n"):
        c = cookie.strip("\n")
        if c.strip():
            docs.append(c.rstrip())
    return docs


def keep(p):
    # A paragraph of prose has letters and several words; drops page furniture and tables.
    words = p.split()
    if len(words) < 4:
        return False
    letters = sum(ch.isalpha() for ch in p)
    return letters >= 0.6 * len(p.replace(" ", ""))


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("html", "rst", "man", "fortune"):
        sys.exit("usage: textify.py html|rst|man|fortune FILE  (FILE '-' = stdin)")
    mode, path = sys.argv[1], sys.argv[2]
    raw = sys.stdin.buffer.read() if path == "-" else open(path, "rb").read()
    text = raw.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\ufffd", "")
    if mode == "fortune":
        docs = [d for d in fortune_docs(text) if len(d.split()) >= 3]
    else:
        paras = {"html": html_paras, "rst": rst_paras, "man": man_paras}[mode](text)
        paras = [p for p in paras if keep(p)]
        docs = ["\n".join(paras)] if paras else []
    for d in docs:
        sys.stdout.write(d + DOC_SEP)


if __name__ == "__main__":
    main()
