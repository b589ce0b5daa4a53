"""Markdown reports as self-contained HTML pages.

:func:`markdown_html` converts the markdown that :mod:`gdlab.report` writes
(headings, tables, ``-`` lists, fenced code, paragraphs, inline code, bold
and links) to HTML, with every figure embedded as a base64 ``data:`` URI, so
that the page opens from the file system on its own; :func:`html_page` wraps
it in a page with a small inline style sheet.  Text is escaped with
``html.escape``.  No markdown library: the converter covers exactly the
markdown gdlab writes.
"""

from __future__ import annotations

import base64
import html
import mimetypes
import os
import re
from collections.abc import Sequence
from pathlib import Path

_CSS = """body{font-family:system-ui,sans-serif;max-width:60rem;
margin:2rem auto;padding:0 1rem;line-height:1.5;color:#222}
table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}
th,td{border:1px solid #ccc;padding:.25rem .5rem}th{background:#f3f3f3}
code,pre{background:#f6f6f6;font-size:.9em}pre{padding:.5rem;overflow:auto}
img{max-width:100%}"""


def _inline(text: str) -> str:
  """Escaped text with Markdown's `code`, **strong** and [links](url)."""
  out = []
  for i, part in enumerate(re.split(r"(`[^`]*`)", text)):
    if i % 2:
      out.append(f"<code>{html.escape(part[1:-1])}</code>")
      continue
    part = html.escape(part.replace("\\|", "|"))
    part = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", part)
    out.append(re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)",
                      r'<a href="\2">\1</a>', part))
  return "".join(out)


def _embedded(alt: str, src: str, base: Path) -> str:
  """An ``<img>`` holding the image file ``base/src`` as a data URI."""
  path = base / src
  if not path.is_file():
    return f"<p>[missing figure: {html.escape(alt)}]</p>"
  mime = mimetypes.guess_type(path.name)[0] or "image/png"
  data = base64.b64encode(path.read_bytes()).decode("ascii")
  return (f'<p><img alt="{html.escape(alt)}" '
          f'src="data:{mime};base64,{data}"></p>')


def _html_table(lines: Sequence[str]) -> str:
  def cells(line):
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]

  right = [c.endswith(":") for c in cells(lines[1])]

  def row(line, tag):
    align = ' style="text-align:right"'
    return "<tr>" + "".join(
        f"<{tag}{align if r else ''}>{_inline(c)}</{tag}>"
        for c, r in zip(cells(line), right)) + "</tr>"

  return "\n".join(["<table>", row(lines[0], "th")]
                   + [row(line, "td") for line in lines[2:]] + ["</table>"])


def markdown_html(markdown: str, base: str | os.PathLike) -> str:
  """The HTML of the Markdown this module writes.

  Handles what the reports hold: ``#`` headings, tables, ``-`` lists, fenced
  code, paragraphs, and image lines ``![alt](path)`` whose file (relative to
  ``base``) is inlined as a data URI, so the page needs no other file.
  """
  out, para, lines, i = [], [], markdown.splitlines(), 0

  def flush():
    if para:
      out.append(f"<p>{_inline(' '.join(para))}</p>")
      para.clear()

  while i < len(lines):
    line = lines[i]
    image = re.fullmatch(r"!\[([^\]]*)\]\(([^)]+)\)", line.strip())
    if line.startswith("```"):
      flush()
      end = next((j for j in range(i + 1, len(lines))
                  if lines[j].startswith("```")), len(lines))
      out.append(f"<pre><code>{html.escape(chr(10).join(lines[i + 1:end]))}"
                 "</code></pre>")
      i = end + 1
      continue
    if line.startswith("|"):
      flush()
      end = next((j for j in range(i, len(lines))
                  if not lines[j].startswith("|")), len(lines))
      if end - i >= 2:
        out.append(_html_table(lines[i:end]))
      else:
        out.append(f"<p>{_inline(line)}</p>")
      i = end
      continue
    if line.startswith("- "):
      flush()
      end = next((j for j in range(i, len(lines))
                  if not lines[j].startswith("- ")), len(lines))
      out.append("<ul>" + "".join(f"<li>{_inline(x[2:])}</li>"
                                  for x in lines[i:end]) + "</ul>")
      i = end
      continue
    heading = re.match(r"(#{1,6}) (.*)", line)
    if heading:
      flush()
      n = len(heading.group(1))
      out.append(f"<h{n}>{_inline(heading.group(2))}</h{n}>")
    elif image:
      flush()
      out.append(_embedded(image.group(1), image.group(2), Path(base)))
    elif line.strip():
      para.append(line.strip())
    else:
      flush()
    i += 1
  flush()
  return "\n".join(out)


def html_page(title: str, markdown: str, base: str | os.PathLike) -> str:
  """A self-contained HTML page of ``markdown`` (see :func:`markdown_html`)."""
  return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
          f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n"
          f"</head>\n<body>\n{markdown_html(markdown, base)}\n</body>\n"
          "</html>\n")
