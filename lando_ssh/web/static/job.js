// A job's page: while the job runs, its state, timeline and cwltool log are read again every 2 s
// from /api/jobs/N/log and put in place (no reload of the page).
(function () {
  "use strict";
  var pre = document.getElementById("log");
  if (!pre || pre.dataset.live !== "1") return;
  var id = pre.dataset.job;
  function refresh() {
    fetch("/api/jobs/" + id + "/log", {headers: {"Accept": "application/json"}})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (d) {
        if (!d) { setTimeout(refresh, 5000); return; }
        var bottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
        if (pre.textContent !== d.log) { pre.textContent = d.log; if (bottom) pre.scrollTop = pre.scrollHeight; }
        var code = document.querySelector("#state code");
        if (code) code.textContent = d.state + d.step;
        var tl = document.getElementById("timeline");
        if (tl) tl.innerHTML = d.timeline;  // built server-side, every value escaped
        pre.dataset.live = d.live ? "1" : "0";
        if (d.live) setTimeout(refresh, 2000);
        else document.body.dataset.ended = "1";
      })
      .catch(function () { setTimeout(refresh, 5000); });
  }
  setTimeout(refresh, 2000);
})();
