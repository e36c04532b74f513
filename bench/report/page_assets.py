"""The inline stylesheet and script of the leaderboard page (sorting by a header; dataset, threat, ranked and battery filters)."""

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1em 1.2em;color:#222}
h1{font-size:1.4em;margin:0 0 .3em}
.controls{display:flex;gap:1.2em;align-items:center;flex-wrap:wrap;margin:.8em 0}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
.table-wrap{max-width:100%;overflow-x:auto;border:1px solid #e3e3e3;margin:.4em 0}
td.clip{max-width:16em;overflow:hidden;text-overflow:ellipsis}
td[data-col=status]{max-width:10em;overflow:hidden;text-overflow:ellipsis}
td.ranked{color:#1e7d32;font-weight:600}
td.unranked{color:#8a6d00}
table.checks td{white-space:normal;vertical-align:top}
#rules ol{margin:.3em 0 .6em 1.2em;padding:0;max-width:80em}
th,td{border-bottom:1px solid #ddd;padding:.25em .35em;text-align:left;white-space:nowrap}
th{background:#f3f3f3;cursor:pointer;user-select:none;position:sticky;top:0}
th:hover{background:#e6e6e6}
th .ind{display:inline-block;width:1em;color:#06c}
td.num{text-align:right}
tr.flagged td{background:#fff4f2}
.flag{display:inline-block;border-radius:.7em;padding:0 .55em;margin-right:.25em;font-size:.85em;color:#fff;
 background:#c0392b;cursor:help}
.flag.flag-robust_acc_rises_with_eps{background:#d68910}
.flag.flag-nondeterministic{background:#7d3c98}
.flag.flag-unknown{background:#555}
.flag.blocking{outline:2px solid #7b241c}
.note{color:#666;font-size:.9em}
"""

JS = r"""
(function () {
  var table = document.getElementById('leaderboard');
  var tbody = table.tBodies[0];
  var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
  var sorted = {col: -1, dir: 1};
  function value(tr, i, numeric) {
    var v = tr.cells[i].getAttribute('data-sort') || '';
    if (v === '') return null;
    if (!numeric) return v;
    var x = parseFloat(v);
    return isNaN(x) ? null : x;
  }
  function sortBy(i) {
    var numeric = heads[i].getAttribute('data-type') === 'num';
    var dir = (sorted.col === i && sorted.dir === 1) ? -1 : 1;
    sorted = {col: i, dir: dir};
    var rows = Array.prototype.slice.call(tbody.rows);
    rows.sort(function (a, b) {  // Array.sort is stable: ties keep their current order
      var x = value(a, i, numeric), y = value(b, i, numeric);
      if (x === null || y === null) return (x === null) - (y === null);  // empty cells last, both ways
      return dir * (x < y ? -1 : x > y ? 1 : 0);
    });
    rows.forEach(function (r) { tbody.appendChild(r); });
    heads.forEach(function (h) { h.removeAttribute('aria-sort'); h.querySelector('.ind').textContent = ''; });
    heads[i].setAttribute('aria-sort', dir === 1 ? 'ascending' : 'descending');
    heads[i].querySelector('.ind').textContent = dir === 1 ? '\u25B2' : '\u25BC';
  }
  heads.forEach(function (th, i) {
    th.addEventListener('click', function () { sortBy(i); });
    th.addEventListener('keydown', function (e) {
      if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); sortBy(i); }
    });
  });
  var dataset = document.getElementById('filter-dataset');
  var threat = document.getElementById('filter-threat');
  var battery = document.getElementById('filter-battery');
  var ranked = document.getElementById('filter-ranked');
  var count = document.getElementById('row-count');
  function applyFilters() {
    var shown = 0, rows = tbody.rows;
    for (var k = 0; k < rows.length; k++) {
      var r = rows[k];
      var t = threat.value;
      var ok = (!dataset.value || r.getAttribute('data-dataset') === dataset.value)
        && (!t || r.getAttribute('data-norm') === t || r.getAttribute('data-threat') === t)
        && (!battery.checked || r.getAttribute('data-primary') === '1')
        && (!ranked.checked || r.getAttribute('data-ranked') === '1');
      r.hidden = !ok;
      if (ok) shown++;
    }
    count.textContent = shown + ' of ' + rows.length + ' rows shown';
  }
  if (!tbody.querySelector('tr[data-ranked="1"]')) ranked.checked = false;  // nothing ranked yet: show what there is
  [dataset, threat, battery, ranked].forEach(function (el) { el.addEventListener('change', applyFilters); });
  applyFilters();
})();
"""
