/* cloudward dashboard: small conveniences on top of pages that work without this script.
   - forms marked data-autosubmit apply a changed select or checkbox at once
   - forms marked data-confirm ask before a destructive action
   - "/" focuses the page's search field; "j"/"k" move between findings, Enter opens one
   - a region marked data-live (jobs, overview) is fetched again while scan jobs are queued or
     running: /jobs/live is asked every few seconds, the page only when its signature changed;
     polling stops once nothing runs, and on any error (logged out, server gone) */
(function () {
  "use strict";

  function typing(target) {
    var tag = (target && target.tagName) || "";
    return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || (target && target.isContentEditable);
  }

  document.addEventListener("change", function (event) {
    var field = event.target;
    var form = field.form;
    if (!form || !form.hasAttribute("data-autosubmit")) return;
    if (field.tagName === "SELECT" || field.type === "checkbox") form.requestSubmit ? form.requestSubmit() : form.submit();
  });

  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) event.preventDefault();
  });

  document.addEventListener("keydown", function (event) {
    if (event.altKey || event.ctrlKey || event.metaKey || typing(event.target)) return;
    if (event.key === "/") {
      var search = document.querySelector("[data-hotkey='/']");
      if (search) { event.preventDefault(); search.focus(); search.select(); }
      return;
    }
    if (event.key !== "j" && event.key !== "k") return;
    var links = Array.prototype.slice.call(document.querySelectorAll("a.finding-link"));
    if (!links.length) return;
    var at = links.indexOf(document.activeElement);
    var next = event.key === "j" ? Math.min(at + 1, links.length - 1) : Math.max(at - 1, 0);
    links[next].focus();
    event.preventDefault();
  });
  var LIVE_EVERY_MS = 3000;

  function liveRefresh() {
    var region = document.querySelector("[data-live]");
    if (!region || !window.fetch || !window.DOMParser) return;
    var stateUrl = region.getAttribute("data-live");
    var signature = region.getAttribute("data-live-signature");

    function json(response) {
      var type = response.headers.get("content-type") || "";
      if (!response.ok || type.indexOf("application/json") !== 0) throw new Error("live state unavailable");
      return response.json();
    }

    function reload() {  // the same page again; only its live region is swapped in
      return fetch(window.location.href, {credentials: "same-origin", cache: "no-store"}).then(function (response) {
        if (!response.ok) throw new Error("page unavailable");
        return response.text();
      }).then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").querySelector("[data-live]");
        var current = document.querySelector("[data-live]");
        if (!fresh || !current) throw new Error("no live region");
        current.replaceWith(document.importNode(fresh, true));
        signature = fresh.getAttribute("data-live-signature");
        return fresh.getAttribute("data-live-active") === "1";
      });
    }

    function tick() {
      fetch(stateUrl, {credentials: "same-origin", cache: "no-store", headers: {"Accept": "application/json"}})
        .then(json)
        .then(function (state) {
          if (state.signature === signature) return state.active > 0;
          return reload().then(function (active) { return active || state.active > 0; });
        })
        .then(function (again) { if (again) window.setTimeout(tick, LIVE_EVERY_MS); })
        .catch(function () { /* stop quietly: a reload by hand shows what happened */ });
    }

    if (region.getAttribute("data-live-active") === "1") window.setTimeout(tick, LIVE_EVERY_MS);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", liveRefresh);
  else liveRefresh();
})();
