// Filter and sort the image rows. Each row carries its searchable text in data-search and its
// sort values in data-k<index>, <index> being the option's value in the sort menu.
(function () {
  "use strict";
  var table = document.getElementById("grid");
  var filter = document.getElementById("filter");
  var sort = document.getElementById("sort");
  var direction = document.getElementById("sort-dir");
  var count = document.getElementById("count");
  var empty = document.getElementById("empty");
  if (!table) {
    [filter, sort, direction].forEach(function (control) { control.disabled = true; });
    return;
  }
  var body = table.tBodies[0];
  var rows = Array.prototype.slice.call(body.rows);
  rows.forEach(function (row, index) { row.dataset.order = String(index); });
  var descending = false;

  function applyFilter() {
    var words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    var shown = 0;
    rows.forEach(function (row) {
      var text = row.dataset.search;
      var match = words.every(function (word) { return text.indexOf(word) !== -1; });
      row.hidden = !match;
      if (match) { shown += 1; }
    });
    count.textContent = shown + " of " + rows.length + (rows.length === 1 ? " image" : " images");
    empty.hidden = shown !== 0;
  }

  function compare(key, numeric) {
    var sign = descending ? -1 : 1;
    return function (a, b) {
      var x = a.dataset[key];
      var y = b.dataset[key];
      var order = Number(a.dataset.order) - Number(b.dataset.order);
      if (x === undefined || y === undefined) {  // rows without a value go last either way
        return x === y ? order : (x === undefined ? 1 : -1);
      }
      var c = numeric ? Number(x) - Number(y) : x.localeCompare(y, undefined, { numeric: true });
      return c !== 0 ? sign * c : order;
    };
  }

  function applySort() {
    var option = sort.options[sort.selectedIndex];
    var sorted = rows.slice().sort(compare("k" + sort.value, option.dataset.type === "num"));
    var fragment = document.createDocumentFragment();
    sorted.forEach(function (row) { fragment.appendChild(row); });
    body.appendChild(fragment);
    direction.textContent = descending ? "↓ descending" : "↑ ascending";
    direction.setAttribute("aria-pressed", descending ? "true" : "false");
  }

  filter.addEventListener("input", applyFilter);
  sort.addEventListener("change", function () {
    descending = sort.options[sort.selectedIndex].dataset.desc === "1";
    applySort();
  });
  direction.addEventListener("click", function () {
    descending = !descending;
    applySort();
  });
  applyFilter();
})();
