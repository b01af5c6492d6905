/* The queue page (/console): tabs with counts, filters, search, the table (cards on a phone),
   paging, live updates from /api/console/stream, bulk 受理 / 转单 / 驳回 and the keyboard.
   The filters live in the address (?tab=&state=...), so a link (e.g. from the dashboard) opens
   the queue filtered. Text goes in as text nodes only (Console.el). */
(function () {
  "use strict";

  var C = window.Console;
  var FILTERS = ["q", "state", "category", "department", "centre", "channel", "from", "to", "overdue"];
  var state = {
    tab: null,
    page: 1,
    options: null,
    items: [],
    known: null, // numbers shown before the last live refresh (null: first load)
    selected: {},
    initial: {},
    cursor: -1,
    loading: null,
  };

  function $(id) {
    return document.getElementById(id);
  }

  // --- the address ---------------------------------------------------------------------

  function readAddress() {
    var params = new URLSearchParams(window.location.search);
    state.initial = {};
    FILTERS.forEach(function (name) {
      var field = $("queue-" + name);
      var value = params.get(name) || "";
      if (field.type === "checkbox") {
        field.checked = value === "1" || value === "true";
      } else if (field.tagName === "SELECT") {
        state.initial[name] = value; // set once the options are there
      } else {
        field.value = value;
      }
    });
    state.tab = params.get("tab");
    var page = parseInt(params.get("page") || "1", 10);
    state.page = page > 0 ? page : 1;
  }

  function query() {
    var params = new URLSearchParams();
    params.set("tab", state.tab);
    FILTERS.forEach(function (name) {
      var field = $("queue-" + name);
      if (field.type === "checkbox") {
        if (field.checked) {
          params.set(name, "1");
        }
      } else if (field.value.trim()) {
        params.set(name, field.value.trim());
      }
    });
    if (state.page > 1) {
      params.set("page", String(state.page));
    }
    return params;
  }

  function writeAddress() {
    var address = window.location.pathname + "?" + query().toString();
    window.history.replaceState(null, "", address);
  }

  // --- options -------------------------------------------------------------------------

  function fill(select, entries, valueOf, labelOf) {
    entries.forEach(function (entry) {
      select.appendChild(C.el("option", { value: valueOf(entry), text: labelOf(entry) }));
    });
  }

  function applyOptions(options) {
    state.options = options;
    fill($("queue-state"), options.states, function (s) { return s.key; }, function (s) { return s.label; });
    fill($("queue-category"), options.categories, function (c) { return String(c.id); }, function (c) { return c.name; });
    fill($("queue-department"), options.departments, function (d) { return String(d.id); }, function (d) { return d.name; });
    fill($("queue-centre"), options.centres, function (c) { return c.code; }, function (c) { return c.name; });
    fill($("queue-channel"), options.channels, function (c) { return c.key; }, function (c) { return c.label; });
    fill($("bulk-department"), options.departments, function (d) { return d.name; }, function (d) { return d.name; });
    Object.keys(state.initial).forEach(function (name) {
      var field = $("queue-" + name);
      var value = state.initial[name];
      if (!value) {
        return;
      }
      field.value = value;
      if (field.value !== value) {
        // A link may name a category or department by name: it is kept as it came.
        field.appendChild(C.el("option", { value: value, text: value }));
        field.value = value;
      }
    });
    $("queue-centre").closest("label").hidden = options.centres.length < 2;
    var keys = options.tabs.map(function (t) { return t.key; });
    if (keys.indexOf(state.tab) < 0) {
      state.tab = keys[0];
    }
    var tabs = $("queue-tabs");
    tabs.textContent = "";
    options.tabs.forEach(function (tab) {
      tabs.appendChild(
        C.el(
          "button",
          {
            type: "button",
            role: "tab",
            class: "queue-tab",
            id: "tab-" + tab.key,
            "data-tab": tab.key,
            onclick: function () {
              state.tab = tab.key;
              state.page = 1;
              load(false);
            },
          },
          C.el("span", { class: "queue-tab-label", text: tab.label }),
          C.el("span", { class: "queue-count", id: "count-" + tab.key, text: "…" })
        )
      );
    });
  }

  // --- the list ------------------------------------------------------------------------

  function load(live) {
    writeAddress();
    var ticket = {};
    state.loading = ticket;
    return C.api("GET", "/api/console/requests?" + query().toString()).then(function (answer) {
      if (state.loading !== ticket) {
        return; // a newer load is under way
      }
      if (!answer.ok) {
        C.say($("queue-message"), (answer.data && answer.data.message) || "加载失败，请稍后重试。", "error");
        return;
      }
      C.say($("queue-message"), "");
      render(answer.data, live);
    });
  }

  function deadlineOf(item) {
    if (["closed", "rejected", "cancelled"].indexOf(item.state) >= 0) {
      return null;
    }
    return !item.acted && item.response_due_at ? item.response_due_at : item.resolution_due_at;
  }

  function cell(label, content, extra) {
    return C.el("td", Object.assign({ "data-label": label }, extra || {}), content);
  }

  function row(item, fresh) {
    var href = "/console/requests/" + encodeURIComponent(item.number);
    var due = deadlineOf(item);
    var late = due && new Date(due).getTime() < Date.now();
    var pick = C.el("input", {
      type: "checkbox",
      class: "queue-pick-box",
      "aria-label": "选择 " + item.number,
      checked: !!state.selected[item.number],
      onchange: function (event) {
        if (event.target.checked) {
          state.selected[item.number] = true;
        } else {
          delete state.selected[item.number];
        }
        showBulk();
      },
    });
    var holder = [item.department, item.handler].filter(Boolean).join(" / ");
    return C.el(
      "tr",
      {
        class: "queue-row" + (fresh ? " is-new" : "") + (item.overdue ? " is-overdue" : ""),
        "data-number": item.number,
      },
      C.el("td", { class: "queue-pick" }, pick),
      cell("编号", [
        C.el("a", { href: href, class: "queue-number", text: item.number }),
        fresh ? C.el("span", { class: "queue-badge", text: "新" }) : null,
      ]),
      cell("诉求", C.el("a", { href: href, class: "queue-summary", tabindex: "-1", text: item.summary })),
      cell("状态", C.el("span", { class: "queue-state state-" + item.state, text: item.state_label })),
      cell("类别", item.category || "—"),
      cell("中心", (item.centre && item.centre.name) || "—"),
      cell("部门 / 经办", holder || "—"),
      cell("渠道", item.channel_label || item.channel),
      cell("受理时间", C.formatDateTime(item.created_at)),
      cell(
        "时限",
        due
          ? [
              C.el("span", { class: "queue-due", text: C.formatDateTime(due) }),
              C.el("span", { class: late ? "queue-left is-late" : "queue-left", text: C.timeLeft(due) }),
            ]
          : "—"
      )
    );
  }

  function render(data, live) {
    Object.keys(data.counts).forEach(function (tab) {
      var count = $("count-" + tab);
      if (count) {
        count.textContent = String(data.counts[tab]);
      }
    });
    Array.prototype.forEach.call(document.querySelectorAll(".queue-tab"), function (tab) {
      var on = tab.getAttribute("data-tab") === data.tab;
      tab.classList.toggle("is-active", on);
      tab.setAttribute("aria-selected", on ? "true" : "false");
    });
    var before = state.known;
    var body = $("queue-rows");
    body.textContent = "";
    var fresh = 0;
    data.items.forEach(function (item) {
      var isNew = live && before !== null && !before[item.number];
      fresh += isNew ? 1 : 0;
      body.appendChild(row(item, isNew));
    });
    state.items = data.items;
    state.known = state.known || {};
    data.items.forEach(function (item) {
      state.known[item.number] = true;
    });
    $("queue-empty").hidden = data.items.length > 0;
    $("queue-table").hidden = data.items.length === 0;
    $("queue-total").textContent = "共 " + data.total + " 件";
    $("queue-page").textContent = "第 " + data.page + " / " + data.pages + " 页";
    $("queue-prev").disabled = data.page <= 1;
    $("queue-next").disabled = data.page >= data.pages;
    if (live && fresh) {
      C.say($("queue-live"), "新到 " + fresh + " 件诉求", "ok");
    }
    if (state.cursor >= data.items.length) {
      state.cursor = data.items.length - 1;
    }
    $("queue-all").checked = data.items.length > 0 && data.items.every(function (i) { return state.selected[i.number]; });
    showBulk();
  }

  // --- bulk ----------------------------------------------------------------------------

  function chosen() {
    return Object.keys(state.selected);
  }

  function showBulk() {
    var numbers = chosen();
    $("queue-bulk").hidden = numbers.length === 0;
    $("queue-selected").textContent = "已选 " + numbers.length + " 件";
  }

  function bulk(action, extra, label) {
    var numbers = chosen();
    if (!numbers.length) {
      return;
    }
    var results = $("queue-results");
    results.hidden = false;
    results.textContent = "";
    results.appendChild(C.el("li", { class: "queue-result-head", text: label + "：" + numbers.length + " 件" }));
    var buttons = document.querySelectorAll("#queue-bulk button");
    Array.prototype.forEach.call(buttons, function (b) { b.disabled = true; });
    // One call per request, one after the other: each is checked and recorded on its own.
    var chain = Promise.resolve();
    numbers.forEach(function (number) {
      chain = chain.then(function () {
        var body = Object.assign({ action: action }, extra);
        return C.api("POST", "/api/console/requests/" + encodeURIComponent(number) + "/actions", body).then(function (answer) {
          var message = (answer.data && (answer.data.message || answer.data.state_label)) || (answer.ok ? "已完成" : "操作失败（" + answer.status + "）");
          results.appendChild(
            C.el(
              "li",
              { class: answer.ok ? "queue-result is-ok" : "queue-result is-error", "data-number": number },
              C.el("strong", { text: number }),
              " ",
              answer.ok ? "成功：" : "未完成：",
              message
            )
          );
          if (answer.ok) {
            // Done: no longer selected; a refused one stays selected for another try.
            delete state.selected[number];
            showBulk();
          }
        });
      });
    });
    return chain.then(function () {
      Array.prototype.forEach.call(buttons, function (b) { b.disabled = false; });
      return load(false);
    });
  }

  // --- live updates --------------------------------------------------------------------

  function listen() {
    if (!window.EventSource) {
      return;
    }
    var source = new EventSource("/api/console/stream");
    var pending = null;
    source.addEventListener("changed", function () {
      // Several changes in a row make one refresh.
      if (pending) {
        return;
      }
      pending = window.setTimeout(function () {
        pending = null;
        load(true);
      }, 300);
    });
    source.addEventListener("ended", function () {
      source.close();
      C.me().then(function () {
        C.say($("queue-live"), "实时更新已断开，请刷新页面。", "error");
      });
    });
  }

  // --- keyboard ------------------------------------------------------------------------

  function typing(target) {
    var tag = target && target.tagName;
    return tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA" || (target && target.isContentEditable);
  }

  function move(step) {
    var rows = document.querySelectorAll("#queue-rows .queue-row");
    if (!rows.length) {
      return;
    }
    state.cursor = Math.max(0, Math.min(rows.length - 1, state.cursor + step));
    Array.prototype.forEach.call(rows, function (r, i) {
      r.classList.toggle("is-current", i === state.cursor);
    });
    rows[state.cursor].querySelector(".queue-number").focus();
  }

  function keys(event) {
    if (event.ctrlKey || event.metaKey || event.altKey) {
      return;
    }
    if (event.key === "/" && !typing(event.target)) {
      event.preventDefault();
      $("queue-q").focus();
      $("queue-q").select();
    } else if ((event.key === "j" || event.key === "k") && !typing(event.target)) {
      event.preventDefault();
      move(event.key === "j" ? 1 : -1);
    } else if (event.key === "Escape" && event.target === $("queue-q")) {
      $("queue-q").blur();
    }
  }

  // --- start ---------------------------------------------------------------------------

  function wire() {
    $("queue-filters").addEventListener("submit", function (event) {
      event.preventDefault();
      state.page = 1;
      load(false);
    });
    ["queue-state", "queue-category", "queue-department", "queue-centre", "queue-channel", "queue-overdue", "queue-from", "queue-to"].forEach(function (id) {
      $(id).addEventListener("change", function () {
        state.page = 1;
        load(false);
      });
    });
    $("queue-reset").addEventListener("click", function () {
      FILTERS.forEach(function (name) {
        var field = $("queue-" + name);
        if (field.type === "checkbox") {
          field.checked = false;
        } else {
          field.value = "";
        }
      });
      state.page = 1;
      load(false);
    });
    $("queue-prev").addEventListener("click", function () {
      state.page = Math.max(1, state.page - 1);
      load(false);
    });
    $("queue-next").addEventListener("click", function () {
      state.page += 1;
      load(false);
    });
    $("queue-all").addEventListener("change", function (event) {
      state.items.forEach(function (item) {
        if (event.target.checked) {
          state.selected[item.number] = true;
        } else {
          delete state.selected[item.number];
        }
      });
      Array.prototype.forEach.call(document.querySelectorAll(".queue-pick-box"), function (box) {
        box.checked = event.target.checked;
      });
      showBulk();
    });
    $("bulk-accept").addEventListener("click", function () {
      bulk("accept", {}, "批量受理");
    });
    $("bulk-forward").addEventListener("click", function () {
      var department = $("bulk-department").value;
      if (!department) {
        C.say($("queue-message"), "请先选择转单的部门。", "error");
        $("bulk-department").focus();
        return;
      }
      bulk("forward", { department: department }, "批量转单至" + department);
    });
    $("bulk-reject").addEventListener("click", function () {
      var reason = $("bulk-reason").value.trim();
      if (!reason) {
        C.say($("queue-message"), "请填写驳回原因。", "error");
        $("bulk-reason").focus();
        return;
      }
      bulk("reject", { text: reason }, "批量驳回");
    });
    $("bulk-clear").addEventListener("click", function () {
      state.selected = {};
      Array.prototype.forEach.call(document.querySelectorAll(".queue-pick-box"), function (box) {
        box.checked = false;
      });
      $("queue-all").checked = false;
      showBulk();
    });
    document.addEventListener("keydown", keys);
  }

  function start() {
    readAddress();
    wire();
    C.nav("queue").then(function (user) {
      if (!user) {
        return;
      }
      C.api("GET", "/api/console/options").then(function (answer) {
        if (!answer.ok) {
          C.say($("queue-message"), (answer.data && answer.data.message) || "加载失败，请稍后重试。", "error");
          return;
        }
        applyOptions(answer.data);
        load(false).then(listen);
      });
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
