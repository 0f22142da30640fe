/* rbmrec dashboard: the pages' behaviour (no inline script: the CSP allows none).
 * Calls the service's JSON API on this origin; the key typed in the header is sent
 * as "Authorization: Bearer" on every call and kept only in this tab's sessionStorage. */
(function () {
  "use strict";

  var KEY = "rbmrec.apiKey";
  var FLASH = "rbmrec.flash";
  var COLORS = ["#0b5cad", "#c2410c", "#15803d", "#7e22ce", "#be123c"];
  var body = document.body;
  var apiRoot = body.dataset.api || "";
  var base = body.dataset.base || "/dashboard";

  function storedKey() {
    try { return window.sessionStorage.getItem(KEY) || ""; } catch (e) { return ""; }
  }

  function flash(message, isError) {
    var box = document.getElementById("flash");
    if (!box) { return; }
    box.textContent = message;
    box.classList.toggle("error", !!isError);
  }

  function flashAfterReload(message) {
    try { window.sessionStorage.setItem(FLASH, message); } catch (e) { /* private mode */ }
    window.location.reload();
  }

  /* One call of the JSON API; rejects with the problem document's detail. */
  function api(method, path, payload) {
    var headers = { "Accept": "application/json" };
    var key = storedKey();
    if (key) { headers["Authorization"] = "Bearer " + key; }
    var init = { method: method, headers: headers, credentials: "omit" };
    if (payload !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(payload);
    }
    return fetch(apiRoot + path, init).then(function (response) {
      return response.text().then(function (text) {
        var data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
        if (!response.ok) {
          var detail = data && (data.detail || data.title) ? (data.detail || data.title) : response.statusText;
          var error = new Error(response.status + ": " + detail);
          error.status = response.status;
          throw error;
        }
        return data;
      });
    });
  }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) {
      if (name === "text") { node.textContent = attrs[name]; }
      else if (name === "class") { node.className = attrs[name]; }
      else { node.setAttribute(name, attrs[name]); }
    });
    (children || []).forEach(function (child) {
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }

  function busy(button, promise) {
    if (button) { button.disabled = true; }
    return promise.then(function (value) {
      if (button) { button.disabled = false; }
      return value;
    }, function (error) {
      if (button) { button.disabled = false; }
      flash(error.message, true);
      throw error;
    });
  }

  /* -- the key form (every page) -------------------------------------------------- */
  function setupKey() {
    var form = document.getElementById("key-form");
    var input = document.getElementById("api-key");
    var state = document.getElementById("key-state");
    function show() {
      state.textContent = storedKey() ? "A key is set for this tab." : "No key set.";
    }
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var value = input.value.trim();
      try {
        if (value) { window.sessionStorage.setItem(KEY, value); }
        else { window.sessionStorage.removeItem(KEY); }
      } catch (e) { flash("This browser keeps no session storage: the key cannot be kept.", true); }
      input.value = "";
      show();
    });
    document.getElementById("forget-key").addEventListener("click", function () {
      try { window.sessionStorage.removeItem(KEY); } catch (e) { /* nothing kept */ }
      show();
    });
    show();
    var pending = null;
    try { pending = window.sessionStorage.getItem(FLASH); window.sessionStorage.removeItem(FLASH); } catch (e) { pending = null; }
    if (pending) { flash(pending, false); }
  }

  /* -- models: charts and activation ---------------------------------------------- */
  function renderCharts(details, data) {
    if (typeof window.uPlot !== "function") { return; }
    var charts = data[details.dataset.version] || [];
    details.querySelectorAll(".chart").forEach(function (box) {
      if (box.dataset.rendered) { return; }
      var chart = charts.filter(function (c) { return c.id === box.dataset.chart; })[0];
      if (!chart) { return; }
      var series = [{ label: "epoch" }];
      var columns = [chart.epochs];
      chart.series.forEach(function (s, i) {
        series.push({
          label: s.label, stroke: COLORS[i % COLORS.length], width: 2,
          points: { show: true, size: 6 }, spanGaps: false
        });
        columns.push(s.values);
      });
      var width = Math.max(260, box.clientWidth || 340);
      var plot = new window.uPlot({
        width: width, height: 220, series: series,
        scales: { x: { time: false, range: function (u, lo, hi) { return [Math.min(1, lo), Math.max(hi, lo + 1)]; } } },
        axes: [{ label: "epoch" }, {}],
        legend: { live: false }
      }, columns, box);
      box.dataset.rendered = "true";
      box.dataset.points = String(plot.data[0].length);
      box.dataset.seriesPoints = chart.series.map(function (s) {
        return s.values.filter(function (v) { return v !== null; }).length;
      }).join(",");
      box._plot = plot;
    });
  }

  function setupModels() {
    var source = document.getElementById("chart-data");
    var data = source ? JSON.parse(source.textContent || "{}") : {};
    document.querySelectorAll("details.version").forEach(function (details) {
      if (details.open) { renderCharts(details, data); }
      details.addEventListener("toggle", function () { if (details.open) { renderCharts(details, data); } });
    });
    var resizeTimer = null;
    window.addEventListener("resize", function () {
      window.clearTimeout(resizeTimer);
      resizeTimer = window.setTimeout(function () {
        document.querySelectorAll(".chart[data-rendered]").forEach(function (box) {
          if (box._plot && box.clientWidth) { box._plot.setSize({ width: Math.max(260, box.clientWidth), height: 220 }); }
        });
      }, 150);
    });
    document.querySelectorAll("button.activate").forEach(function (button) {
      button.addEventListener("click", function () {
        var version = button.dataset.version;
        busy(button, api("POST", "/models/" + encodeURIComponent(version) + "/activate")).then(function (info) {
          flashAfterReload("Activated " + info.id + ": this process serves it now; other API processes within their poll interval.");
        }, function () { /* shown by busy() */ });
      });
    });
  }

  /* -- retrain runs ------------------------------------------------------------------- */
  function setupRuns() {
    var button = document.getElementById("retrain-now");
    button.addEventListener("click", function () {
      busy(button, api("POST", "/admin/retrain")).then(function (run) {
        flashAfterReload("Run " + run.id + " is " + run.status + ": the worker runs it (rbmrec worker).");
      }, function () { /* shown by busy() */ });
    });
  }

  /* -- try it ------------------------------------------------------------------------- */
  function setupTry() {
    var rated = new Map();
    var levels = document.getElementById("rating-levels");
    var results = document.getElementById("search-results");
    var ratedList = document.getElementById("rated");
    var recs = document.getElementById("recommendations");
    var meta = document.getElementById("recs-meta");

    function itemLink(id, title) {
      return el("a", { href: base + "/items/" + encodeURIComponent(id), text: title || id });
    }

    function drawRated() {
      ratedList.textContent = "";
      rated.forEach(function (entry, id) {
        var remove = el("button", { type: "button", text: "Remove" });
        remove.appendChild(el("span", { class: "visually-hidden", text: " " + (entry.title || id) }));
        remove.addEventListener("click", function () { rated.delete(id); drawRated(); });
        ratedList.appendChild(el("li", { "data-item": id }, [
          el("span", { class: "title" }, [itemLink(id, entry.title)]),
          el("strong", { text: String(entry.rating) }), remove
        ]));
      });
      document.getElementById("rated-empty").hidden = rated.size > 0;
    }

    document.getElementById("search-form").addEventListener("submit", function (event) {
      event.preventDefault();
      var q = document.getElementById("q").value.trim();
      if (!q) { return; }
      var button = event.target.querySelector("button");
      busy(button, api("GET", "/items?limit=20&sort=popularity&q=" + encodeURIComponent(q))).then(function (page) {
        results.textContent = "";
        if (!page.items.length) { results.appendChild(el("li", { text: "No title contains “" + q + "”." })); }
        page.items.forEach(function (item) {
          var selectId = "rate-" + item.id;
          var select = el("select", { id: selectId });
          select.innerHTML = levels.innerHTML;
          select.value = select.options[select.options.length - 1].value;
          var label = el("label", { for: selectId, class: "visually-hidden", text: "Rating for " + (item.title || item.id) });
          var add = el("button", { type: "button", text: "Rate", "data-item": item.id });
          add.appendChild(el("span", { class: "visually-hidden", text: " " + (item.title || item.id) }));
          add.addEventListener("click", function () {
            rated.set(item.id, { title: item.title, rating: Number(select.value) });
            drawRated();
            flash("Rated " + (item.title || item.id) + " " + select.value + " (in this page only).", false);
          });
          results.appendChild(el("li", { "data-item": item.id }, [
            el("span", { class: "title" }, [itemLink(item.id, item.title),
              el("span", { class: "muted", text: item.genres.length ? " · " + item.genres.join(", ") : "" })]),
            label, select, add
          ]));
        });
        meta.textContent = "";
      }, function () { /* shown by busy() */ });
    });

    function showRecommendations(answer, who) {
      recs.textContent = "";
      meta.textContent = answer.items.length + " items for " + who + " · strategy " + answer.strategy +
        (answer.model_version ? " · model " + answer.model_version : " · no model yet") +
        (answer.strategy === "popular" ? " (the most rated items: nothing the model can fold in)" : "");
      answer.items.forEach(function (item) {
        var why = el("div", { class: "why" });
        if (item.reason) { why.appendChild(el("p", { class: "reason", text: item.reason })); }
        if (item.explanations && item.explanations.length) {
          var list = el("ul", { "aria-label": "Supporting ratings" });
          item.explanations.forEach(function (e) {
            list.appendChild(el("li", { "data-item": e.item_id }, [
              itemLink(e.item_id, e.title), " rated " + e.rating + ": +" + e.contribution.toFixed(3) + " to the score"
            ]));
          });
          why.appendChild(list);
        }
        var predicted = item.predicted_rating === null ? "" : " · predicted rating " + item.predicted_rating.toFixed(2);
        recs.appendChild(el("li", { "data-item": item.item_id }, [
          itemLink(item.item_id, item.title), el("span", { class: "muted", text: predicted }), why
        ]));
      });
      recs.focus();
    }

    document.getElementById("recommend-rated").addEventListener("click", function (event) {
      var ratings = [];
      rated.forEach(function (entry, id) { ratings.push({ item_id: id, rating: entry.rating }); });
      busy(event.target, api("POST", "/recommendations", { ratings: ratings, n: 10, explain: true })).then(function (answer) {
        showRecommendations(answer, "the " + ratings.length + " ratings of this page");
      }, function () { /* shown by busy() */ });
    });

    document.getElementById("user-form").addEventListener("submit", function (event) {
      event.preventDefault();
      var user = document.getElementById("user-id").value.trim();
      var button = event.target.querySelector("button");
      busy(button, api("GET", "/users/" + encodeURIComponent(user) + "/recommendations?n=10&explain=true")).then(function (answer) {
        showRecommendations(answer, "user " + user);
      }, function () { /* shown by busy() */ });
    });

    document.getElementById("save-form").addEventListener("submit", function (event) {
      event.preventDefault();
      var user = document.getElementById("save-user").value.trim();
      if (!user || !rated.size) { flash("Rate some items and give a user id to save them as.", true); return; }
      var ratings = [];
      rated.forEach(function (entry, id) { ratings.push({ user_id: user, item_id: id, rating: entry.rating }); });
      var button = event.target.querySelector("button");
      busy(button, api("POST", "/ratings/batch", { ratings: ratings })).then(function () {
        flash("Saved " + ratings.length + " ratings as user " + user + ".", false);
      }, function () { /* shown by busy() */ });
    });
    recs.setAttribute("tabindex", "-1");
    drawRated();
  }

  setupKey();
  var page = body.dataset.page;
  if (page === "models") { setupModels(); }
  if (page === "runs") { setupRuns(); }
  if (page === "try") { setupTry(); }
})();
