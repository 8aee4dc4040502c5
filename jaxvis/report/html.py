"""Small HTML helpers for jaxvis's static pages: escaping, number formatting and the page shell
(one stylesheet, optional inline script). Pages and their files are written all or nothing by
:func:`jaxvis.io.atomic.write_all`.

Pages work from ``file://`` with nothing fetched from anywhere: the style and scripts are inline,
images are files next to the page.
"""

from __future__ import annotations

import html
import math

import numpy as np



def esc(text) -> str:
    return html.escape(str(text), quote=True)


def fmt(value) -> str:
    """A number for tables: 3 significant digits, integers as they are, NaN as an en dash."""
    if value is None:
        return "–"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    value = float(value)
    if not math.isfinite(value):
        return "–"
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.2e}"
    return f"{value:.3g}"


CSS = """
body{font-family:sans-serif;font-size:14px;margin:16px 24px;color:#222;max-width:1400px}
h1{font-size:22px}h2{font-size:18px;margin-top:28px}h3{font-size:15px;margin:4px 0}
table{border-collapse:collapse;margin:8px 0}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:right;vertical-align:middle}
th{background:#f0f0f0}td.l,th.l{text-align:left}
table.units th.sortable{cursor:pointer;user-select:none;min-width:48px;max-width:120px}
table.units th.sortable:hover{background:#dde}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
img{image-rendering:pixelated;image-rendering:crisp-edges;vertical-align:middle}
td.imgs{white-space:nowrap;text-align:left}td.imgs img{margin-right:2px}
.plots{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
.unit-detail{border-top:1px solid #bbb;padding:8px 0 12px 0;content-visibility:auto;
  contain-intrinsic-size:auto 320px}
.unit-detail:target{background:#fff8d8;outline:2px solid #e0c040}
.tiles{display:flex;flex-wrap:wrap;gap:10px;margin:6px 0}
figure{margin:0;text-align:center;font-size:12px}figcaption{color:#444}
.note{color:#666}.nowrap{white-space:nowrap}.kv{color:#333;font-size:13px}
.warn{color:#8a3b00;background:#fff3e0;border-left:3px solid #e08000;padding:4px 8px}
.scroll{overflow-x:auto;max-width:100%}
table.units td:first-child,table.units th:first-child{position:sticky;left:0;z-index:1;background:#fff}
table.units th:first-child{background:#f0f0f0}
table.units:not(.all) .more{display:none}
.gallery-row h3{margin-top:12px}.cards{display:flex;flex-wrap:wrap;gap:12px}
a.card{display:flex;flex-direction:column;gap:2px;text-decoration:none;color:#222;border:1px solid #ddd;
  padding:4px;font-size:12px}a.card:hover{background:#eef}
table.sets td{vertical-align:top}table.sets td.setname{max-width:170px}table.sets .tiles{margin:0;flex-wrap:nowrap}table.sets th{max-width:90px}
.heat{display:flex;align-items:flex-start;gap:2px}
table.measures{font-size:12px}details summary{cursor:pointer;color:#446}
"""

# sorts every ``table.units`` by the clicked column (``data-v`` of its cells; NaN last)
SORT_JS = """
(function(){
  function key(cell){
    var v=parseFloat(cell.getAttribute('data-v'));
    return isNaN(v)?null:v;
  }
  document.querySelectorAll('table.units').forEach(function(table){
    var heads=table.querySelectorAll('th.sortable');
    heads.forEach(function(th){
      th.addEventListener('click',function(){
        var col=th.cellIndex;
        var asc=th.getAttribute('aria-sort')!=='ascending';
        heads.forEach(function(h){h.removeAttribute('aria-sort');});
        th.setAttribute('aria-sort',asc?'ascending':'descending');
        var body=table.tBodies[0];
        var rows=Array.prototype.slice.call(body.rows);
        rows.forEach(function(r,i){r._pos=i;});
        rows.sort(function(a,b){
          var x=key(a.cells[col]),y=key(b.cells[col]);
          if(x===null&&y===null)return a._pos-b._pos;
          if(x===null)return 1;
          if(y===null)return -1;
          if(x===y)return a._pos-b._pos;
          return asc?x-y:y-x;
        });
        rows.forEach(function(r){body.appendChild(r);});
      });
    });
  });
})();
"""


def html_page(title: str, body: str, *, script: str = "") -> str:
    js = f"<script>{script}</script>" if script else ""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<link rel="icon" href="data:,">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head>\n"
            f"<body>\n{body}\n{js}</body></html>\n")


