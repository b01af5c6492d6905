/* The leaders' dashboard (数据看板): the figures of GET /api/console/stats (the same JSON as
   `redesk stats --format json`) as cards, ECharts charts and tables; a click on a figure opens
   the queue (/console) filtered to those requests. Text goes in as text nodes only; the charts'
   tooltips are drawn on the canvas (renderMode "richText"), so nothing needs an inline style. */
(function () {
  "use strict";

  var C = window.Console;
  var el = C.el;

  /** What the page shows: the filters and the user's own centre. */
  var view = { from: "", to: "", centre: "", trend: "day", home: null };
  var charts = {};
  /** Group names of what has no department or category (workflow/stats.py): the queue has
      no filter for them, so their rows are not links. */
  var COMMITTEE = "党委自办";
  var NO_CATEGORY = "未分类";

  // --- dates -------------------------------------------------------------------------------

  function today() {
    return C.formatDate(new Date());
  }

  function shift(day, days) {
    var moment = new Date(day + "T00:00:00Z");
    moment.setUTCDate(moment.getUTCDate() + days);
    return moment.toISOString().slice(0, 10);
  }

  function monthStart(day) {
    return day.slice(0, 8) + "01";
  }

  function periodOf(kind) {
    var now = today();
    if (kind === "month") {
      return { from: monthStart(now), to: now };
    }
    if (kind === "last-month") {
      var last = shift(monthStart(now), -1);
      return { from: monthStart(last), to: last };
    }
    return { from: shift(now, -(Number(kind) - 1)), to: now };
  }

  // --- URLs --------------------------------------------------------------------------------

  function query(params) {
    var search = new URLSearchParams();
    Object.keys(params).forEach(function (key) {
      var value = params[key];
      if (value !== null && value !== undefined && value !== "") {
        search.set(key, String(value));
      }
    });
    return search.toString();
  }

  function filters(extra) {
    return Object.assign({ from: view.from, to: view.to, centre: view.centre }, extra || {});
  }

  function statsUrl(by) {
    return "/api/console/stats?" + query(filters({ by: by }));
  }

  /** The queue filtered to the requests of a figure (the queue's query parameters). */
  function queueUrl(extra) {
    return "/console?" + query(Object.assign({ tab: "all" }, filters(extra)));
  }

  function trendLink(key) {
    var end = view.trend === "week" ? shift(key, 6) : key;
    return { from: key < view.from ? view.from : key, to: view.to && end > view.to ? view.to : end };
  }

  function rowLink(by, row) {
    if (by === "centre") {
      return { centre: row.centre };
    }
    if (by === "department") {
      return row.key === COMMITTEE ? null : { department: row.key };
    }
    if (by === "category") {
      return row.key === NO_CATEGORY ? null : { category: row.key };
    }
    return trendLink(row.key);
  }

  // --- numbers -----------------------------------------------------------------------------

  function percent(rate) {
    return rate.value === null ? "—" : (rate.value * 100).toFixed(1) + "%";
  }

  function fraction(rate) {
    return rate.numerator + "/" + rate.denominator;
  }

  /** A duration as the CLI's table shows it: 秒, 分钟, or 小时 with one decimal. */
  function duration(seconds) {
    if (seconds === null || seconds === undefined) {
      return "—";
    }
    if (seconds < 60) {
      return Math.round(seconds) + " 秒";
    }
    if (seconds < 3600) {
      return Math.round(seconds / 60) + " 分钟";
    }
    return (seconds / 3600).toFixed(1) + " 小时";
  }

  // --- the summary cards ---------------------------------------------------------------------

  function figure(key, label, value, detail, link, warn) {
    return el(
      "a",
      {
        class: "dashboard-figure" + (warn ? " is-warn" : ""),
        id: "figure-" + key,
        href: queueUrl(link),
        "data-figure": key,
      },
      el("span", { class: "dashboard-figure-label", text: label }),
      el("span", { class: "dashboard-figure-value", text: value }),
      detail ? el("span", { class: "dashboard-figure-detail", text: detail }) : null
    );
  }

  function renderSummary(report) {
    var totals = report.totals;
    var box = document.getElementById("summary");
    box.textContent = "";
    [
      figure("received", "受理量", String(totals.received), "办结 " + totals.closed + " · 在办 " + totals.open, {}),
      figure("response_rate", "响应率", percent(totals.response_rate), "按时响应 " + fraction(totals.response_rate), {}),
      figure("resolution_rate", "解决率", percent(totals.resolution_rate), "已解决 " + fraction(totals.resolution_rate), {}),
      figure("satisfaction_rate", "满意率", percent(totals.satisfaction_rate), "满意 " + fraction(totals.satisfaction_rate), {}),
      figure("overdue", "当前超期", String(totals.overdue), "在办中已过办结时限", { tab: "overdue", overdue: "1" }, totals.overdue > 0),
      figure(
        "first_action",
        "首次响应（工作时间）",
        duration(totals.first_action_median_working_seconds),
        "中位数 · 平均 " + duration(totals.first_action_mean_working_seconds) + " · P90 " + duration(totals.first_action_p90_working_seconds),
        {}
      ),
      figure(
        "reply",
        "回单用时（工作时间）",
        duration(totals.reply_median_working_seconds),
        "中位数 · 平均 " + duration(totals.reply_mean_working_seconds) + " · P90 " + duration(totals.reply_p90_working_seconds),
        {}
      ),
      figure("rating_rate", "评价率", percent(totals.rating_rate), "已评价 " + fraction(totals.rating_rate), {}),
    ].forEach(function (node) {
      box.appendChild(node);
    });
  }

  // --- tables ------------------------------------------------------------------------------

  var COLUMNS = [
    { label: "受理量", value: function (row) { return String(row.received); } },
    { label: "办结量", value: function (row) { return String(row.closed); } },
    { label: "超期", value: function (row) { return String(row.overdue); } },
    { label: "响应率", value: function (row) { return percent(row.response_rate) + " (" + fraction(row.response_rate) + ")"; } },
    { label: "解决率", value: function (row) { return percent(row.resolution_rate) + " (" + fraction(row.resolution_rate) + ")"; } },
    { label: "满意率", value: function (row) { return percent(row.satisfaction_rate) + " (" + fraction(row.satisfaction_rate) + ")"; } },
    { label: "回单中位（工作时间）", value: function (row) { return duration(row.reply_median_working_seconds); } },
    { label: "回单平均", value: function (row) { return duration(row.reply_mean_working_seconds); } },
    { label: "回单 P90", value: function (row) { return duration(row.reply_p90_working_seconds); } },
  ];

  function renderTable(id, by, heading, report) {
    var table = document.getElementById(id);
    table.textContent = "";
    table.appendChild(
      el(
        "thead",
        null,
        el(
          "tr",
          null,
          el("th", { scope: "col", text: heading }),
          COLUMNS.map(function (column) {
            return el("th", { scope: "col", text: column.label });
          })
        )
      )
    );
    var body = el("tbody");
    if (!report.rows.length) {
      body.appendChild(el("tr", null, el("td", { colspan: COLUMNS.length + 1, class: "hint", text: "这段时间没有诉求。" })));
    }
    report.rows.forEach(function (row) {
      var link = rowLink(by, row);
      var linked = function (text) {
        return link ? el("a", { href: queueUrl(link), text: text }) : text;
      };
      body.appendChild(
        el(
          "tr",
          { "data-key": row.key },
          el("th", { scope: "row" }, linked(row.key)),
          COLUMNS.map(function (column, index) {
            return el("td", { class: "is-number" }, index === 0 ? linked(column.value(row)) : column.value(row));
          })
        )
      );
    });
    table.appendChild(body);
  }

  // --- charts ------------------------------------------------------------------------------

  var RED = "#b71c1c";
  var GREY = "#8d8d8d";

  function chart(id) {
    if (!charts[id]) {
      charts[id] = window.echarts.init(document.getElementById(id), null, { renderer: "canvas" });
    }
    return charts[id];
  }

  /** Tooltips drawn on the canvas: the app's CSP allows no inline style, which ECharts' HTML
      tooltips would need. */
  var TOOLTIP = { trigger: "axis", renderMode: "richText", axisPointer: { type: "shadow" } };

  function onClick(instance, links) {
    instance.off("click");
    instance.on("click", function (params) {
      var link = links[params.dataIndex];
      if (link) {
        window.location.assign(queueUrl(link));
      }
    });
  }

  function renderTrend(report) {
    var instance = chart("trend-chart");
    var keys = report.rows.map(function (row) { return row.key; });
    instance.setOption(
      {
        animation: false,
        tooltip: TOOLTIP,
        legend: { data: ["受理量", "办结量"], top: 0 },
        grid: { left: 40, right: 16, top: 32, bottom: 32 },
        xAxis: { type: "category", data: keys },
        yAxis: { type: "value", minInterval: 1 },
        series: [
          { name: "受理量", type: "bar", data: report.rows.map(function (row) { return row.received; }), itemStyle: { color: RED } },
          { name: "办结量", type: "line", data: report.rows.map(function (row) { return row.closed; }), itemStyle: { color: GREY } },
        ],
      },
      true
    );
    onClick(instance, report.rows.map(function (row) { return trendLink(row.key); }));
  }

  function rateOf(rate) {
    return rate.value === null ? null : Math.round(rate.value * 1000) / 10;
  }

  function renderCentres(report) {
    var instance = chart("centre-chart");
    instance.setOption(
      {
        animation: false,
        tooltip: TOOLTIP,
        legend: { data: ["响应率", "解决率", "满意率"], top: 0 },
        grid: { left: 48, right: 16, top: 32, bottom: 56 },
        xAxis: { type: "category", data: report.rows.map(function (row) { return row.key; }), axisLabel: { interval: 0, rotate: 20 } },
        yAxis: { type: "value", max: 100, axisLabel: { formatter: "{value}%" } },
        series: ["response_rate", "resolution_rate", "satisfaction_rate"].map(function (key, index) {
          return {
            name: ["响应率", "解决率", "满意率"][index],
            type: "bar",
            data: report.rows.map(function (row) { return rateOf(row[key]); }),
            itemStyle: { color: [RED, "#e57373", GREY][index] },
          };
        }),
      },
      true
    );
    onClick(instance, report.rows.map(function (row) { return rowLink("centre", row); }));
  }

  function renderDepartments(report) {
    var instance = chart("department-chart");
    instance.setOption(
      {
        animation: false,
        tooltip: TOOLTIP,
        grid: { left: 96, right: 24, top: 16, bottom: 24 },
        xAxis: { type: "value", minInterval: 1 },
        yAxis: { type: "category", inverse: true, data: report.rows.map(function (row) { return row.key; }) },
        series: [{ name: "受理量", type: "bar", data: report.rows.map(function (row) { return row.received; }), itemStyle: { color: RED } }],
      },
      true
    );
    onClick(instance, report.rows.map(function (row) { return rowLink("department", row); }));
  }

  // --- filters -----------------------------------------------------------------------------

  function fillCentres(scope, byCentre) {
    var select = document.getElementById("centre");
    select.textContent = "";
    var seen = {};
    function add(code, name) {
      if (!code || seen[code]) {
        return;
      }
      seen[code] = true;
      select.appendChild(el("option", { value: code, text: name, selected: code === scope.code }));
    }
    if (view.home) {
      add(view.home.code, view.home.name);
    }
    add(scope.code, scope.name);
    byCentre.rows.forEach(function (row) {
      if (!row.own) {
        add(row.centre, row.key);
      }
    });
  }

  function readLocation() {
    var search = new URLSearchParams(window.location.search);
    var period = periodOf("month");
    view.from = search.get("from") || period.from;
    view.to = search.get("to") || period.to;
    view.centre = search.get("centre") || "";
    view.trend = search.get("trend") === "week" ? "week" : "day";
  }

  function writeForm() {
    document.getElementById("from").value = view.from;
    document.getElementById("to").value = view.to;
    document.getElementById("trend").value = view.trend;
  }

  function updateDownloads() {
    var unmasked = document.getElementById("unmasked").checked;
    ["csv", "xlsx"].forEach(function (format) {
      document.getElementById("download-" + format).href =
        "/api/console/export?" + query(filters({ format: format, unmasked: unmasked ? "1" : "" }));
    });
  }

  function load() {
    var status = document.getElementById("status");
    C.say(status, "正在统计…");
    var wanted = { totals: statsUrl(""), centre: statsUrl("centre"), department: statsUrl("department"), category: statsUrl("category"), trend: statsUrl(view.trend) };
    var names = Object.keys(wanted);
    return Promise.all(
      names.map(function (name) {
        return C.api("GET", wanted[name]);
      })
    ).then(function (answers) {
      var failed = answers.filter(function (answer) { return !answer.ok; })[0];
      if (failed) {
        C.say(status, (failed.data && failed.data.message) || "统计失败，请稍后重试。", "error");
        return;
      }
      var reports = {};
      names.forEach(function (name, index) {
        reports[name] = answers[index].data;
      });
      var scope = reports.totals.centre;
      document.getElementById("scope-name").textContent = scope ? scope.name : "";
      document.getElementById("period-label").textContent = view.from + " 至 " + view.to + "（北京时间）";
      fillCentres(scope, reports.centre);
      renderSummary(reports.totals);
      renderTrend(reports.trend);
      renderTable("trend-table", view.trend, view.trend === "week" ? "周（周一）" : "日期", reports.trend);
      renderCentres(reports.centre);
      renderTable("centre-table", "centre", "中心", reports.centre);
      renderDepartments(reports.department);
      renderTable("department-table", "department", "部门", reports.department);
      renderTable("category-table", "category", "类别", reports.category);
      updateDownloads();
      C.say(status, "");
      document.body.setAttribute("data-loaded", "true");
    });
  }

  function apply() {
    view.from = document.getElementById("from").value;
    view.to = document.getElementById("to").value;
    view.centre = document.getElementById("centre").value;
    view.trend = document.getElementById("trend").value;
    if (view.from && view.to && view.to < view.from) {
      C.say(document.getElementById("status"), "结束日期早于开始日期。", "error");
      return;
    }
    window.history.replaceState(null, "", "/console/dashboard?" + query({ from: view.from, to: view.to, centre: view.centre, trend: view.trend }));
    document.body.removeAttribute("data-loaded");
    load();
  }

  function start() {
    C.nav("dashboard").then(function (user) {
      if (!user) {
        return;
      }
      view.home = user.centre;
      readLocation();
      writeForm();
      document.getElementById("filters").addEventListener("submit", function (event) {
        event.preventDefault();
        apply();
      });
      Array.prototype.forEach.call(document.querySelectorAll("[data-period]"), function (button) {
        button.addEventListener("click", function () {
          var period = periodOf(button.getAttribute("data-period"));
          document.getElementById("from").value = period.from;
          document.getElementById("to").value = period.to;
          apply();
        });
      });
      document.getElementById("unmasked").addEventListener("change", updateDownloads);
      window.addEventListener("resize", function () {
        Object.keys(charts).forEach(function (id) {
          charts[id].resize();
        });
      });
      load();
    });
  }

  start();
})();
