// The plots page: one request for /api/plots (same query as the page), each chart drawn by uPlot.
(function () {
  "use strict";
  var COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
                "#17becf"];
  function width(el) { return Math.max(560, Math.min(900, el.clientWidth || 560)); }
  function empty(el, text) { var p = document.createElement("p"); p.className = "empty"; p.textContent = text; el.appendChild(p); }
  function lines(id, xs, named, opts) {
    var el = document.getElementById(id);
    var names = Object.keys(named);
    if (!xs.length || !names.length) { empty(el, "nothing to show in this period"); return; }
    var series = [{}], data = [xs];
    // bars for one series; several would hide each other, so they are lines with their points marked
    var bars = opts && opts.bars && names.length === 1;
    names.forEach(function (name, i) {
      var color = COLORS[i % COLORS.length];
      series.push({label: name, stroke: color, width: 2, points: {show: !bars && !!(opts && opts.bars), size: 7},
                   dash: opts && opts.total === name ? [6, 4] : undefined,  // a total, drawn over its parts
                   paths: bars ? uPlot.paths.bars({size: [0.8, 40]})
                               : opts && opts.notime ? function () { return null; } : undefined,
                   fill: bars ? color + "88" : undefined});
      data.push(named[name]);
    });
    new uPlot({width: width(el), height: 240, series: series,
               scales: {x: opts && opts.range ? {time: true, range: function () { return opts.range; }}
                           : {time: !(opts && opts.notime)}},
               axes: opts && opts.axes ? opts.axes : undefined}, data, el);
    el.dataset.drawn = String(names.length);
  }
  function categories(id, labels, named, unit) {
    var xs = labels.map(function (_, i) { return i; });
    lines(id, xs, named, {bars: true, notime: true, axes: [
      {values: function (u, vals) { return vals.map(function (v) { return labels[v] === undefined ? "" : labels[v]; }); }},
      {label: unit}]});
  }
  var params = window.location.search;
  fetch("/api/plots" + params, {headers: {"Accept": "application/json"}})
    .then(function (r) { return r.json().then(function (d) { return {ok: r.ok, d: d}; }); })
    .then(function (res) {
      var d = res.d;
      if (!res.ok) { empty(document.getElementById("jobs_by_state"), d.error || "cannot read the plots"); return; }
      var period = [d.since, d.until];
      var days = d.core_hours_by_project.days;
      var dayRange = days.length ? [days[0] - 43200, days[days.length - 1] + 43200] : period;
      lines("jobs_by_state", d.times, d.jobs_by_state, {range: period});
      var queue = {};
      if (d.queue.length.some(function (n) { return n > 0; })) {
        Object.keys(d.queue.reasons).forEach(function (why) { queue[why] = d.queue.reasons[why]; });
        queue["jobs waiting"] = d.queue.length;
      }
      lines("queue", d.times, queue, {range: period, total: "jobs waiting"});
      lines("jobs_ended", d.times, d.jobs_ended, {bars: true, range: period});
      lines("vms", d.times, {VMs: d.vms}, {range: period});
      lines("core_hours_by_project", days, d.core_hours_by_project.series, {bars: true, range: dayRange});
      lines("core_hours_by_owner", d.core_hours_by_owner.days, d.core_hours_by_owner.series,
            {bars: true, range: dayRange});
      categories("step_seconds", d.step_seconds.steps,
                 d.step_seconds.steps.length ? {median: d.step_seconds.median, p90: d.step_seconds.p90,
                                                longest: d.step_seconds.max} : {}, "seconds");
      var boots = {};
      if (d.boot.n_active) boots["to ACTIVE (" + d.boot.n_active + " VMs)"] = d.boot.active;
      if (d.boot.n_ssh) boots["to SSH (" + d.boot.n_ssh + " VMs)"] = d.boot.ssh;
      categories("boot", d.boot.edges.map(function (e) { return e + "s"; }), boots, "VMs");
      document.body.dataset.plotted = "1";
    });
})();
