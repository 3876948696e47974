"""Markup to paragraphs, and the script filter that keeps a paragraph only in the language it claims.

Three documentation formats appear in Debian's packages:
- HTML (LibreOffice help, the installation guide): text of block elements, navigation and scripts dropped;
- Mallard XML (`.page`, GNOME help): `title` and `p` elements outside the `info` block (credits, links);
- the FAQ's plain-text rendering: numbered section headings at column 0, indented paragraphs wrapped at
  ~70 columns and separated by blank lines; each subsection becomes one document.
Every cleaner returns a list of paragraphs with whitespace collapsed.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

SKIP_HTML = {"script", "style", "head", "header", "aside", "nav", "footer", "noscript", "button", "select"}
BLOCK_HTML = {"p", "div", "li", "dt", "dd", "td", "th", "tr", "pre", "br", "table", "ul", "ol", "dl",
              "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "section", "body", "title"}
SKIP_CLASSES = {"navheader", "navfooter", "toc", "lot"}  # DocBook navigation bars and tables of contents
VOID_HTML = {"br", "img", "meta", "link", "input", "hr", "area", "base", "col", "embed", "source", "wbr"}
MALLARD = "{http://projectmallard.org/1.0/}"
FAQ_HEADING = re.compile(r"^\d+(\.\d+)*\.\s+\S")  # "7.3. What is ..." at column 0


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


class _Paragraphs(HTMLParser):
    """Collects text, breaking paragraphs at block elements and skipping unwanted subtrees."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.buf: list[str] = []
        self.stack: list[tuple[str, bool]] = []  # open elements and whether each starts a skipped subtree
        self.skipping = 0

    def _flush(self):
        text = squash("".join(self.buf))
        if text:
            self.out.append(text)
        self.buf = []

    def handle_starttag(self, tag, attrs):
        if tag in VOID_HTML:
            if tag == "br" and not self.skipping:
                self._flush()
            return
        classes = set((dict(attrs).get("class") or "").split())
        skip = tag in SKIP_HTML or bool(classes & SKIP_CLASSES)
        self.stack.append((tag, skip))
        self.skipping += skip
        if tag in BLOCK_HTML and not self.skipping:
            self._flush()

    def handle_endtag(self, tag):
        if tag in VOID_HTML or tag not in {t for t, _ in self.stack}:
            return  # stray end tag: ignore rather than unbalance the stack
        while self.stack:  # close implicitly ended elements (<p> without </p>) too
            name, skip = self.stack.pop()
            self.skipping -= skip
            if name == tag:
                break
        if tag in BLOCK_HTML and not self.skipping:
            self._flush()

    def handle_data(self, data):
        if not self.skipping:
            self.buf.append(data)


def html_paragraphs(markup: str) -> list[str]:
    parser = _Paragraphs()
    parser.feed(markup)
    parser.close()
    parser._flush()
    return parser.out


def mallard_paragraphs(markup: str | bytes) -> list[str]:
    """Titles and paragraphs of a Mallard page, in document order; `info` blocks are left out."""
    try:
        root = ET.fromstring(markup)
    except ET.ParseError as e:
        raise ValueError(f"not a well-formed Mallard page: {e}") from e
    out: list[str] = []

    def walk(el):
        name = el.tag.removeprefix(MALLARD)
        if name == "info":
            return
        if name in ("title", "p", "desc", "code", "screen"):
            text = squash("".join(el.itertext()))
            if text:
                out.append(text)
            return  # a paragraph's inline children are already in its text
        for child in el:
            walk(child)

    walk(root)
    return out


def faq_documents(text: str) -> list[tuple[str, list[str]]]:
    """(heading, paragraphs) per section of the FAQ's text rendering. The preamble before the first
    heading, the table of contents (indented blocks of headings) and sections without text are dropped;
    wrapped lines of one paragraph are joined with a space."""
    sections: list[tuple[str, list[list[str]]]] = []
    for line in text.splitlines():
        if FAQ_HEADING.match(line):
            sections.append((squash(line), [[]]))
        elif sections:
            blocks = sections[-1][1]
            if line.strip() and not line[0].isspace() and blocks == [[]]:
                continue  # the wrapped rest of a long heading
            if line.strip():
                blocks[-1].append(line.strip())
            elif blocks[-1]:
                blocks.append([])
    out = []
    for heading, blocks in sections:
        paragraphs = [squash(" ".join(b)) for b in blocks
                      if b and not all(FAQ_HEADING.match(line) for line in b)]  # table-of-contents entries
        if paragraphs:
            out.append((heading, paragraphs))
    return out


# ------------------------------------------------------------------------------------------ scripts


def is_hangul(ch: str) -> bool:
    """Hangul syllables, Jamo and compatibility Jamo."""
    o = ord(ch)
    return 0xAC00 <= o <= 0xD7A3 or 0x1100 <= o <= 0x11FF or 0x3130 <= o <= 0x318F


def is_latin(ch: str) -> bool:
    """ASCII letters and the Latin-1 / Latin Extended-A and -B letters."""
    return ch.isascii() and ch.isalpha() or 0xC0 <= ord(ch) <= 0x24F and ch.isalpha()


def script_fraction(text: str, lang: str) -> float:
    """Share of the letters of `text` that are in the script of `lang` ('ko': Hangul, 'en': Latin);
    0 for a text without letters."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return 0.0
    test = {"ko": is_hangul, "en": is_latin}[lang]
    return sum(map(test, letters)) / len(letters)


def keep_paragraph(text: str, lang: str, min_fraction: float, min_chars: int) -> bool:
    """Long enough, and mostly in the script of its language (the Korean help has untranslated pages)."""
    return len(text) >= min_chars and script_fraction(text, lang) >= min_fraction
